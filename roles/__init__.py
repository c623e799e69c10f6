"""Roles: what each kind of agent claims and produces; each has its program in roles/<role>.md."""
