"""The strict loader of the exported program: nothing in the model file chooses code to run.

The model file (a torch.export .pt2 zip) was written where agent code ran, and torch.export.load
trusts it: a tensor size may be a string that sympy evaluates, a node's target a dotted name that
is looked up on the torch module (`torch.os.system`), a weight or constant or the sample inputs a
pickle. So the evaluator never hands the agent's file to torch. `load_program` reads the zip
itself, checks every entry against a strict schema (fixed file names; plain integer sizes, strides
and offsets; only aten operators without side effects, mutation or randomness; no symbolic
values, custom objects, pickles, guards or mutated state; identifiers that are identifiers), and
writes a new archive from the checked parts alone: node metadata is dropped and the sample inputs
are the evaluator's own. Only that archive reaches torch.export.load. Anything unexpected is refused
with the reason (an ArchiveRefused), before torch has seen a byte of it.
"""

from __future__ import annotations

import io
import json
import operator as _operator
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.export.pt2_archive._package import PT2ArchiveWriter
from torch.utils import _pytree as pytree

MAX_ENTRIES = 100_000
MAX_TOTAL_BYTES = 16 << 30  # far above any model a tier trains; a zip bomb stops here
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
FQN = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\Z")
TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\Z")
WEIGHT_FILE = re.compile(r"weight_[0-9]+\Z")
CONSTANT_FILE = re.compile(r"tensor_[0-9]+\Z")
# aten operators that reach files or print, whatever their schema says.
DENIED_OPS = {"from_file", "_print", "save", "load"}
FIXED_FILES = {"archive_format": "pt2", "archive_version": "0", "byteorder": "little"}
ZIP_BOOKKEEPING = {".data/version", ".data/serialization_id"}  # written by torch's zip writer itself
MODEL_JSON = "models/model.json"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
ARGUMENT_KINDS = {"as_none", "as_tensor", "as_tensors", "as_optional_tensors", "as_int", "as_ints", "as_float",
                  "as_floats", "as_string", "as_strings", "as_bool", "as_bools", "as_scalar_type",
                  "as_memory_format", "as_layout", "as_device"}  # fmt: skip
TENSOR_META_KEYS = {"dtype", "sizes", "requires_grad", "device", "strides", "storage_offset", "layout"}


class ArchiveRefused(ValueError):
    """The model file is not a plain exported program of tensors and aten operators."""


def load_program(path: str | Path, batch: int, length: int) -> torch.export.ExportedProgram:
    """The exported program in `path`, loaded from a checked copy, functional and stateless.

    ArchiveRefused says what was wrong. In-place operators on intermediate values are fine (the
    functionalised graph has none left); a program that writes to a buffer, a constant or its input
    keeps state between calls and is refused.
    """
    program = torch.export.load(io.BytesIO(checked_archive(path, batch, length)))
    program = program.run_decompositions({})  # functionalise: every write to state shows in the signature
    signature = program.graph_signature
    mutated = {**signature.buffers_to_mutate, **signature.user_inputs_to_mutate}
    _require(not mutated, f"the program writes to {sorted(mutated.values())[:5]}: a scored program keeps no "
             "state between calls")  # fmt: skip
    for node in program.graph.nodes:
        if node.op == "call_function":
            target = node.target
            _require(target is _operator.getitem or (isinstance(target, torch._ops.OpOverload)
                                                     and not target._schema.is_mutable),
                     f"after functionalisation the program still calls {target}")
    return program


def checked_archive(path: str | Path, batch: int, length: int) -> bytes:
    """A new .pt2 archive holding only the checked parts of the one at `path`."""
    files = _read_zip(path)
    for name, value in FIXED_FILES.items():
        _require(files.get(name, b"").decode(errors="replace").strip() == value, f"{name} must say {value!r}")
    _require(MODEL_JSON in files and WEIGHTS_CONFIG in files and CONSTANTS_CONFIG in files,
             f"the archive lacks one of {MODEL_JSON}, {WEIGHTS_CONFIG}, {CONSTANTS_CONFIG}")
    weights = _payload_config(files, WEIGHTS_CONFIG, "data/weights/", WEIGHT_FILE)
    constants = _payload_config(files, CONSTANTS_CONFIG, "data/constants/", CONSTANT_FILE)
    program = _program(_json(files[MODEL_JSON], MODEL_JSON))
    payloads = {f"data/weights/{e['path_name']}" for e in weights["config"].values()}
    payloads |= {f"data/constants/{e['path_name']}" for e in constants["config"].values()}
    known = set(FIXED_FILES) | ZIP_BOOKKEEPING | {MODEL_JSON, WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS} | payloads
    unknown = sorted(set(files) - known)
    _require(not unknown, f"unexpected files in the archive: {', '.join(unknown[:5])}")

    buffer = io.BytesIO()
    with PT2ArchiveWriter(buffer) as writer:
        writer.write_string(MODEL_JSON, json.dumps(program))
        writer.write_string(WEIGHTS_CONFIG, json.dumps(weights))
        writer.write_string(CONSTANTS_CONFIG, json.dumps(constants))
        for name in sorted(payloads):
            writer.write_bytes(name, files[name])
        sample = io.BytesIO()
        torch.save(((torch.zeros(batch, length, dtype=torch.long),), {}), sample)  # ours, not the file's pickle
        writer.write_bytes(SAMPLE_INPUTS, sample.getvalue())
    return buffer.getvalue()


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise ArchiveRefused(f"the model file is refused: {reason}")


def _read_zip(path: str | Path) -> dict[str, bytes]:
    """Every file of the zip, by its name under the archive's one root folder."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _require(len(infos) <= MAX_ENTRIES, f"{len(infos)} entries")
            total = sum(info.file_size for info in infos)
            _require(total <= MAX_TOTAL_BYTES, f"{total} bytes unpacked; the limit is {MAX_TOTAL_BYTES}")
            roots = {info.filename.split("/", 1)[0] for info in infos}
            _require(len(roots) == 1 and IDENTIFIER.match(next(iter(roots))) is not None,
                     f"the entries must share one root folder, not {sorted(roots)[:5]}")
            files: dict[str, bytes] = {}
            for info in infos:
                name = info.filename.split("/", 1)[1] if "/" in info.filename else ""
                _require(bool(name) and not info.is_dir() and name not in files, f"bad entry {info.filename!r}")
                files[name] = archive.read(info)
            return files
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArchiveRefused(f"the model file is refused: not a readable zip archive ({exc})") from exc


def _json(data: bytes, where: str) -> Any:
    def constant(word: str) -> float:  # json.loads calls this for NaN and the infinities
        return float(word)

    try:
        return json.loads(data, parse_constant=constant)
    except ValueError as exc:
        raise ArchiveRefused(f"the model file is refused: {where} is not JSON ({exc})") from exc


def _keys(value: Any, allowed: set[str], where: str, required: set[str] | None = None) -> dict[str, Any]:
    _require(isinstance(value, dict), f"{where} must be an object")
    extra = set(value) - allowed
    _require(not extra, f"{where} has unexpected fields {sorted(extra)}")
    missing = (allowed if required is None else required) - set(value)
    _require(not missing, f"{where} lacks {sorted(missing)}")
    return value


def _name(value: Any, where: str, pattern: re.Pattern[str] = IDENTIFIER) -> str:
    _require(isinstance(value, str) and pattern.match(value) is not None and "__" not in value,
             f"{where} must be a plain name, not {str(value)[:80]!r}")
    return value


def _integer(value: Any, where: str) -> int:
    _require(type(value) is int, f"{where} must be an integer")
    return value


def _plain_ints(items: Any, where: str) -> None:
    """Sizes and strides: each {"as_int": n}; a symbolic expression (`as_expr`) is what sympy would evaluate."""
    _require(isinstance(items, list), f"{where} must be a list")
    for item in items:
        _integer(_keys(item, {"as_int"}, f"{where} (only plain integers)")["as_int"], where)


def _tensor_meta(meta: Any, where: str) -> None:
    _keys(meta, TENSOR_META_KEYS, where)
    _integer(meta["dtype"], f"{where}.dtype")
    _integer(meta["layout"], f"{where}.layout")
    _require(isinstance(meta["requires_grad"], bool), f"{where}.requires_grad must be a boolean")
    _plain_ints(meta["sizes"], f"{where}.sizes")
    _plain_ints(meta["strides"], f"{where}.strides")
    _plain_ints([meta["storage_offset"]], f"{where}.storage_offset")
    _device(meta["device"], f"{where}.device")


def _device(device: Any, where: str) -> None:
    _keys(device, {"type", "index"}, where)
    _require(device["type"] in ("cpu", "cuda"), f"{where} must be cpu or cuda")
    _require(device["index"] is None or type(device["index"]) is int, f"{where}.index must be an integer")


def _payload_config(files: dict[str, bytes], config: str, folder: str, file_name: re.Pattern[str]) -> dict[str, Any]:
    """A weights or constants config: raw tensors only (`use_pickle` would torch.load them unrestricted)."""
    entries = _keys(_json(files[config], config), {"config"}, config)["config"]
    _require(isinstance(entries, dict), f"{config} must map names to payloads")
    for fqn, entry in entries.items():
        where = f"{config}[{fqn!r}]"
        _name(fqn, where, FQN)
        _keys(entry, {"path_name", "is_param", "use_pickle", "tensor_meta"}, where)
        _require(entry["use_pickle"] is False, f"{where} is a pickle; only raw tensors are loaded")
        _require(isinstance(entry["is_param"], bool), f"{where}.is_param must be a boolean")
        _require(isinstance(entry["path_name"], str) and file_name.match(entry["path_name"]) is not None,
                 f"{where}.path_name {str(entry['path_name'])[:80]!r} is not a tensor file name")
        _require(folder + entry["path_name"] in files, f"{where} names a missing file")
        _tensor_meta(entry["tensor_meta"], f"{where}.tensor_meta")
    return {"config": entries}



def _program(doc: Any) -> dict[str, Any]:
    """model.json, checked field by field; node metadata (stack traces, module paths) left out."""
    _keys(doc, {"graph_module", "opset_version", "range_constraints", "schema_version", "verifiers", "torch_version",
                "guards_code"}, "model.json", required={"graph_module", "schema_version"})  # fmt: skip
    _require(not doc.get("range_constraints"), "symbolic shapes (range_constraints) are not allowed")
    _require(not doc.get("guards_code"), "guards_code is not allowed")
    _require(set(doc.get("verifiers", [])) <= {"TRAINING", "ATEN"}, f"unknown verifiers {doc.get('verifiers')}")
    _require(isinstance(doc.get("torch_version", ""), str), "torch_version must be a string")
    version = _keys(doc["schema_version"], {"major", "minor"}, "schema_version")
    _integer(version["major"], "schema_version.major"), _integer(version["minor"], "schema_version.minor")
    opsets = doc.get("opset_version", {})
    _require(isinstance(opsets, dict), "opset_version must be an object")
    for key, value in opsets.items():
        _name(key, "an opset name"), _integer(value, f"opset_version[{key!r}]")
    module = _keys(doc["graph_module"], {"graph", "signature", "module_call_graph", "metadata",
                                         "treespec_namedtuple_fields"}, "graph_module",
                   required={"graph", "signature", "module_call_graph"})  # fmt: skip
    _require(not module.get("metadata") and not module.get("treespec_namedtuple_fields"),
             "graph_module metadata and named-tuple specs are not allowed")
    _graph(module["graph"])
    _signature(module["signature"])
    _call_graph(module["module_call_graph"])
    clean = dict(doc, guards_code=[], range_constraints={})
    clean["graph_module"] = dict(module, metadata={}, treespec_namedtuple_fields={})
    clean["graph_module"]["graph"] = dict(module["graph"], nodes=[dict(n, metadata={}) for n in module["graph"]["nodes"]])
    return clean


def _graph(graph: Any) -> None:
    _keys(graph, {"inputs", "outputs", "nodes", "tensor_values", "sym_int_values", "sym_bool_values",
                  "sym_float_values", "custom_obj_values", "is_single_tensor_return"}, "graph",
          required={"inputs", "outputs", "nodes", "tensor_values"})  # fmt: skip
    for key in ("sym_int_values", "sym_bool_values", "sym_float_values", "custom_obj_values"):
        _require(not graph.get(key), f"the graph holds {key}: only tensors of fixed shape are allowed")
    _require(isinstance(graph.get("is_single_tensor_return", False), bool), "is_single_tensor_return must be a boolean")
    _require(isinstance(graph["tensor_values"], dict), "tensor_values must be an object")
    for name, meta in graph["tensor_values"].items():
        _tensor_meta(meta, f"tensor {_name(name, 'a tensor name')}")
    for key in ("inputs", "outputs"):
        _require(isinstance(graph[key], list), f"graph {key} must be a list")
        for arg in graph[key]:
            _tensor_arg(_keys(arg, {"as_tensor"}, f"a graph {key[:-1]} (only tensors)")["as_tensor"], f"graph {key}")
    _require(isinstance(graph["nodes"], list), "nodes must be a list")
    for node in graph["nodes"]:
        _node(node)


def _node(node: Any) -> None:
    _keys(node, {"target", "inputs", "outputs", "metadata", "is_hop_single_tensor_return", "name"}, "a node",
          required={"target", "inputs", "outputs"})
    where = f"node {str(node.get('name', '?'))[:80]!r}"
    if "name" in node:
        _name(node["name"], f"{where}'s name")
    _require(node.get("is_hop_single_tensor_return") is None, f"{where} is a higher-order operator")
    operator(node["target"])
    _require(isinstance(node["inputs"], list) and isinstance(node["outputs"], list), f"{where}: inputs and outputs are lists")
    for item in node["inputs"]:
        _keys(item, {"name", "arg", "kind"}, f"{where}'s input", required={"name", "arg"})
        _name(item["name"], f"{where}'s argument name")
        _require(type(item.get("kind", 1)) is int, f"{where}'s argument kind must be an integer")
        _argument(item["arg"], where)
    for item in node["outputs"]:
        _require(isinstance(item, dict) and set(item) <= {"as_tensor", "as_tensors", "as_none", "as_optional_tensors"},
                 f"{where} outputs something other than tensors")
        _argument(item, where)


def operator(target: Any) -> torch._ops.OpOverload:
    """The aten operator a node names, one that reaches no file (randomness fails the probes).

    The deserializer resolves any dotted name starting with `torch` by getattr (`torch.os.system`
    is os.system), so only `torch.ops.aten.<op>.<overload>` is accepted, and checked as an operator.
    """
    match = TARGET.match(target) if isinstance(target, str) else None
    _require(match is not None, f"node target {str(target)[:80]!r} is not an aten operator")
    assert match is not None
    op, overload = match.groups()
    _require(op not in DENIED_OPS, f"the operator aten.{op} reaches files or the terminal")
    try:
        resolved = getattr(getattr(torch.ops.aten, op), overload)
    except (AttributeError, RuntimeError) as exc:
        raise ArchiveRefused(f"the model file is refused: unknown operator aten.{op}.{overload}") from exc
    _require(isinstance(resolved, torch._ops.OpOverload), f"aten.{op}.{overload} is not an operator")
    return resolved


def _tensor_arg(value: Any, where: str) -> None:
    _name(_keys(value, {"name"}, where)["name"], f"{where}: a tensor name")


def _argument(arg: Any, where: str) -> None:
    _require(isinstance(arg, dict) and len(arg) == 1, f"{where}: an argument has exactly one kind")
    ((kind, value),) = arg.items()
    _require(kind in ARGUMENT_KINDS, f"{where}: arguments of kind {str(kind)[:40]!r} are not allowed")
    scalar = {"as_int": (int,), "as_float": (int, float), "as_bool": (bool,), "as_string": (str,),
              "as_scalar_type": (int,), "as_memory_format": (int,), "as_layout": (int,)}  # fmt: skip
    if kind == "as_none":
        _require(value is None or isinstance(value, bool), f"{where}: as_none holds a value")
    elif kind == "as_tensor":
        _tensor_arg(value, where)
    elif kind == "as_device":
        _device(value, where)
    elif kind in scalar:
        _require(type(value) in scalar[kind], f"{where}: {kind} holds a {type(value).__name__}")
    else:
        _require(isinstance(value, list), f"{where}: {kind} must be a list")
        for item in value:
            if kind == "as_tensors":
                _tensor_arg(item, where)
            elif kind == "as_optional_tensors":
                _require(isinstance(item, dict) and set(item) in ({"as_tensor"}, {"as_none"}), f"{where}: optional tensor")
                _argument(item, where)
            else:
                _argument({kind[:-1]: item}, where)


def _signature(signature: Any) -> None:
    """Parameters, buffers and tensor constants in, one tensor out: nothing mutated, nothing kept."""
    _keys(signature, {"input_specs", "output_specs"}, "signature")
    users = 0
    for spec in signature["input_specs"]:
        _require(isinstance(spec, dict) and len(spec) == 1, "an input spec has exactly one kind")
        ((kind, value),) = spec.items()
        fields = {"parameter": {"arg", "parameter_name"}, "buffer": {"arg", "buffer_name", "persistent"},
                  "tensor_constant": {"arg", "tensor_constant_name"}, "user_input": {"arg"}}.get(kind)  # fmt: skip
        _require(fields is not None, f"inputs of kind {str(kind)[:40]!r} are not allowed")
        assert fields is not None
        _keys(value, fields, f"a {kind} input")
        if kind == "user_input":
            users += 1
            _tensor_arg(_keys(value["arg"], {"as_tensor"}, "the user input (a tensor)")["as_tensor"], "the user input")
        else:
            _tensor_arg(value["arg"], f"a {kind} input")
            _name(value[f"{kind}_name"], f"a {kind} name", FQN)
        _require(kind != "buffer" or isinstance(value["persistent"], bool), "a buffer's persistent must be a boolean")
    _require(users == 1, f"the program takes {users} inputs; it must take the token ids alone")
    outputs = signature["output_specs"]
    kinds = [next(iter(s)) if isinstance(s, dict) and len(s) == 1 else "?" for s in outputs]
    _require(kinds == ["user_output"], f"the program's outputs are {kinds}: it must return the logits alone, and a "
             "program that writes to its buffers or its input keeps state between calls")  # fmt: skip
    _tensor_arg(_keys(outputs[0]["user_output"], {"arg"}, "the output")["arg"].get("as_tensor"), "the output")


def _call_graph(entries: Any) -> None:
    """The root's calling convention is forward(x) -> tensor; submodules carry their names only."""
    _require(isinstance(entries, list) and len(entries) >= 1, "module_call_graph must be a non-empty list")
    root = _keys(entries[0], {"fqn", "signature"}, "the root call")
    _require(root["fqn"] == "", "the first call must be the root module's")
    signature = _keys(root["signature"], {"inputs", "outputs", "in_spec", "out_spec", "forward_arg_names"},
                      "the root call's signature")
    _require(signature["inputs"] == [] and signature["outputs"] == [], "the root call lists no inputs or outputs")
    _require(signature["in_spec"] == IN_SPEC and signature["out_spec"] == OUT_SPEC,
             "the program must take (token_ids,) and return one tensor")
    names = signature["forward_arg_names"]
    _require(isinstance(names, list) and len(names) == 1, "forward takes one argument")
    _name(names[0], "forward's argument")
    for entry in entries[1:]:
        _keys(entry, {"fqn", "signature"}, "a submodule call")
        _name(entry["fqn"], "a submodule's name", FQN)
        _require(entry["signature"] is None, "only the root call may carry a signature")


IN_SPEC = pytree.treespec_dumps(pytree.tree_structure(((torch.zeros(()),), {})))
OUT_SPEC = pytree.treespec_dumps(pytree.tree_structure(torch.zeros(())))
