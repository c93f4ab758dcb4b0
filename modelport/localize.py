"""Find where a failing ONNX or OpenVINO export departs from PyTorch: every module boundary the graph keeps is
marked as an output, the PyTorch module's own outputs are captured with hooks, and the first module after the
last one that still agrees is named, with its graph node.

Graph nodes carry the exporter's module scopes (``/conv2/conv2.0/conv1/conv/Conv``); a module's boundary is
the last node of its scope. The exporter folds a BatchNorm into the convolution before it, so that node outputs
what PyTorch's BatchNorm outputs: a module whose output feeds a BatchNorm with no node of its own is compared
with the BatchNorm's output. Any other rewrite that makes an inner module disagree although the graph is right
heals (a boundary downstream agrees again), while a real departure reaches every boundary downstream. The
departure is the first disagreeing boundary, in graph order, whose downstream boundaries all disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelport.errors import ModelportError, UnsupportedFormatError


@dataclass(frozen=True, slots=True)
class Boundary:
    module: str  # PyTorch module path, e.g. conv2.0.conv1 ('' for the whole model)
    node: str  # the graph node whose output is the module's output
    op: str
    rel_max: float  # max abs diff / max(1, max |PyTorch|)
    cosine: float

    def agrees(self, rel_tol: float, min_cosine: float) -> bool:
        return self.rel_max <= rel_tol and self.cosine >= min_cosine


@dataclass(slots=True)
class Localization:
    artifact: str
    boundaries: list[Boundary] = field(default_factory=list)
    departure: Boundary | None = None

    def summary(self) -> str:
        if self.departure is None:
            return f"{self.artifact}: every module output that the graph keeps agrees with PyTorch"
        d = self.departure
        return (f"{self.artifact}: first departs from PyTorch at node {d.node} ({d.op}), the output of module "
                f"{d.module!r}: rel max diff {d.rel_max:.3g}, cosine {d.cosine:.6f}")


def module_path(scope: str, modules: set[str]) -> str | None:
    """``/conv2/conv2.0/conv2d/conv2d.0/conv1`` -> ``conv2.0.conv2d.0.conv1``: the exporter names a Sequential's
    child ``<sequential attr>.<index>``, so such a part replaces the last component instead of extending it."""
    path = ""
    for part in (p for p in scope.split("/") if p):
        last = path.rsplit(".", 1)[-1] if path else ""
        if last and part.startswith(last + "."):
            path = path[: len(path) - len(last)] + part
        else:
            path = f"{path}.{part}" if path else part
    return path if path in modules else None


def boundaries(nodes: list[tuple[str, str, str]], modules: set[str]) -> dict[str, tuple[int, str, str, str]]:
    """``{module: (graph position, node, op, output tensor)}``: the last node inside each module's scope."""
    last: dict[str, tuple[int, str, str, str]] = {}
    for index, (name, op, output) in enumerate(nodes):
        path = module_path(name.rsplit("/", 1)[0], modules)
        while path:  # the node closes its own module and, for now, every enclosing one
            last[path] = (index, name, op, output)
            path = path.rsplit(".", 1)[0] if "." in path else ""
    return last


Graph = tuple[list[tuple[str, str, str]], list[set[int]]]  # (name, op, output) per node; consumers per node


def _onnx_graph(model) -> Graph:
    nodes = [(n.name, n.op_type, n.output[0]) for n in model.graph.node if n.name and n.output]
    kept = [n for n in model.graph.node if n.name and n.output]
    producer = {out: i for i, n in enumerate(kept) for out in n.output}
    children: list[set[int]] = [set() for _ in kept]
    for i, n in enumerate(kept):
        for name in n.input:
            if name in producer:
                children[producer[name]].add(i)
    return nodes, children


def run_onnx_marked(path: Path, batch: np.ndarray, modules: set[str]) -> tuple[Graph, dict, dict[str, np.ndarray]]:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = _onnx_graph(model)
    marks = boundaries(graph[0], modules)
    final = next(i for i, (_n, _o, out) in enumerate(graph[0]) if out == model.graph.output[0].name)
    marks[""] = (final, *graph[0][final])  # the whole model: what verification compared
    known = {o.name for o in model.graph.output}
    for _index, _node, _op, tensor in marks.values():
        if tensor not in known:
            model.graph.output.append(onnx.ValueInfoProto(name=tensor))
            known.add(tensor)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: batch})
    return graph, marks, dict(zip(names, values))


def run_openvino_marked(path: Path, batch: np.ndarray, modules: set[str]) -> tuple[Graph, dict, dict[str, np.ndarray]]:
    import openvino as ov

    xml = next(path.glob("*.xml"), None) if path.is_dir() else path
    if xml is None:
        raise ModelportError(f"{path}: no OpenVINO .xml inside")
    core = ov.Core()
    model = core.read_model(str(xml))
    ops = [op for op in model.get_ordered_ops()
           if op.get_output_size() and op.get_type_name() not in ("Parameter", "Constant", "Result")]
    position = {op.get_friendly_name(): i for i, op in enumerate(ops)}
    children: list[set[int]] = [set() for _ in ops]
    for i, op in enumerate(ops):
        for target in op.output(0).get_target_inputs():
            j = position.get(target.get_node().get_friendly_name())
            if j is not None and j != i:
                children[i].add(j)
    # Each op keyed by position: friendly names repeat where a converter split one ONNX node into several ops.
    nodes = [(op.get_friendly_name(), op.get_type_name(), str(i)) for i, op in enumerate(ops)]
    marks = boundaries(nodes, modules)
    final = position[model.outputs[0].get_node().input_value(0).get_node().get_friendly_name()]
    marks[""] = (final, *nodes[final])  # the whole model: what verification compared
    chosen = sorted({int(t) for _i, _n, _o, t in marks.values()})
    names = {}
    for i in chosen:  # a name of our own on each marked tensor finds it again after compilation
        names[i] = {f"modelport_mark_{i}", *ops[i].output(0).get_names()}
        ops[i].output(0).get_tensor().add_names({f"modelport_mark_{i}"})
    model.add_outputs([ops[i].output(0) for i in chosen])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(batch)
    by_name = {name: port for port in compiled.outputs for name in port.get_names()}
    values = {}
    for i in chosen:
        port = next((by_name[n] for n in sorted(names[i]) if n in by_name), None)
        if port is not None:  # else the compiler merged it away: that boundary is not compared
            values[str(i)] = result[port]
    return (nodes, children), marks, values


def capture_torch(module, batch: np.ndarray, paths: set[str], folded: set[str] = frozenset()) -> dict[str, np.ndarray]:
    """Each of ``paths``' output on ``batch``; a module whose output is the input of a BatchNorm in ``folded`` gets
    that BatchNorm's output instead, which is what the graph computes once the BatchNorm is folded into it."""
    import torch

    captured: dict[str, np.ndarray] = {}
    calls: dict[str, int] = {}
    produced: dict[int, tuple[torch.Tensor, list[str]]] = {}  # id -> (the tensor, kept alive; who returned it)
    handles = []

    def hook(_m, inp, out, name: str) -> None:
        calls[name] = calls.get(name, 0) + 1
        if not isinstance(out, torch.Tensor):
            return
        # A copy: an in-place op after the module (ReLU(inplace=True)) would otherwise rewrite it.
        value = out.detach().float().cpu().numpy().copy()
        if name in folded:
            source = produced.get(id(inp[0])) if inp and isinstance(inp[0], torch.Tensor) else None
            for producer in source[1] if source is not None and source[0] is inp[0] else ():
                captured[producer] = value
        if name in paths:
            captured[name] = value
            produced.setdefault(id(out), (out, []))[1].append(name)

    for name, sub in module.named_modules():
        if name in paths or name in folded:  # "" is the whole module
            handles.append(sub.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name)))
    try:
        with torch.inference_mode():
            module(torch.from_numpy(batch))
    finally:
        for h in handles:
            h.remove()
    # A module called several times (OSNet's shared channel gate) has no single output to compare.
    return {name: value for name, value in captured.items() if calls.get(name) == 1}


def folded_norms(module, marks: dict) -> set[str]:
    """BatchNorm modules the graph has no node for: the exporter folded them into the layer before."""
    from torch import nn

    return {name for name, sub in module.named_modules()
            if isinstance(sub, nn.modules.batchnorm._BatchNorm) and name not in marks}


def localize(artifact: str | Path, module, batch: np.ndarray, *, artifact_batch: np.ndarray | None = None,
             rel_tol: float = 1e-4, min_cosine: float = 0.9999) -> Localization:
    """Compare every module boundary of ``artifact`` (ONNX file or OpenVINO folder) with ``module`` on ``batch``;
    ``artifact_batch`` is the same rows prepared for the artifact when its input differs (uint8 pixels)."""
    from modelport.formats import format_of_path

    artifact = Path(artifact)
    fmt = format_of_path(artifact).id
    modules = {name for name, _ in module.named_modules() if name}  # the root is marked by the graph's output
    if fmt == "onnx":
        graph, marks, values = run_onnx_marked(artifact, batch if artifact_batch is None else artifact_batch, modules)
    elif fmt == "openvino":
        graph, marks, values = run_openvino_marked(artifact, batch if artifact_batch is None else artifact_batch,
                                                   modules)
    else:
        raise UnsupportedFormatError(f"{artifact}: --localize marks intermediate outputs of ONNX and OpenVINO "
                                     f"exports, not {fmt}", hint="localize the ONNX export of the same model")
    module.eval()
    reference = capture_torch(module, batch, set(marks), folded_norms(module, marks))
    result = Localization(str(artifact))
    at: list[int] = []  # graph position of each compared boundary
    # Graph order; a module closed by the same node as its parent comes first.
    for path, (index, node, op, tensor) in sorted(marks.items(), key=lambda kv: (kv[1][0], -kv[0].count("."))):
        ref, got = reference.get(path), values.get(tensor)
        if ref is None or got is None or ref.shape != got.shape:
            continue  # a boundary the graph reshaped or a module returning a tuple: not comparable
        a, b = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
        rel = float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max()))) if a.size else 0.0
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = np.where((na == 0) & (nb == 0), 1.0, (a * b).sum(1) / np.maximum(na * nb, 1e-30))
        result.boundaries.append(Boundary(path, node, op, rel, float(cos.min()) if len(cos) else 1.0))
        at.append(index)
    agree = [b.agrees(rel_tol, min_cosine) for b in result.boundaries]
    agreeing_nodes = {i for i, ok in zip(at, agree) if ok}
    for boundary, index, ok in zip(result.boundaries, at, agree):
        if not ok and not _reaches(index, agreeing_nodes - {index}, graph[1]):
            result.departure = boundary
            break
    return result


def _reaches(start: int, targets: set[int], children: list[set[int]]) -> bool:
    """Whether any node in ``targets`` is downstream of ``start``."""
    seen, todo = {start}, [start]
    while todo:
        for child in children[todo.pop()]:
            if child in targets:
                return True
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return False
