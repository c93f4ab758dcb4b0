"""End-to-end detector graphs: the raw ONNX head output followed by NMS inside the graph.

Two flavours share the decoding and produce the same outputs (num_dets [B,1] int32, det_boxes [B,k,4]
xyxy, det_scores [B,k], det_classes [B,k] int32):

- ``portable``: the standard ONNX NonMaxSuppression operator, then TopK to pad to k rows. Runs in ONNX
  Runtime and OpenVINO on the CPU.
- ``tensorrt``: TensorRT's EfficientNMS_TRT plugin node (inputs boxes [B,A,4] + scores [B,A,C]; attributes
  as in the plugin's README), which only TensorRT can execute.

With ``NmsConfig.layout == "ultralytics"`` the portable graph gives instead one ``output0 [B,k,6]`` (x1, y1, x2,
y2, score, class; zero rows past the last box), the layout of Ultralytics' ``nms=True`` exports.

Both keep only each anchor's best class (Ultralytics' default, ``multi_label=False``). The portable flavour
runs one class-agnostic NonMaxSuppression over boxes shifted by ``class * CLASS_OFFSET``, Ultralytics' own
device for per-class NMS, so boxes of different classes never overlap; it measured faster than the operator's
per-class loop over a one-hot score tensor. The TensorRT flavour feeds the plugin per-class scores that are zero
except for each anchor's best class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLAVORS = ("portable", "tensorrt")
# Output layouts: TensorRT EfficientNMS's four tensors, or Ultralytics' one ``[B, k, 6]`` (its ``nms=True`` export).
LAYOUTS = ("efficientnms", "ultralytics")
ULTRALYTICS_OUTPUT = "output0"  # the name Ultralytics' nms=True export gives its one output
CLASS_OFFSET = 7680.0  # Ultralytics' max_wh: larger than any input side, so shifted classes never overlap
TRT_DOMAIN = "TRT"  # custom domain: onnx.checker skips schema checks, TensorRT's parser finds the plugin by name


@dataclass(frozen=True, slots=True)
class NmsConfig:
    flavor: str = "portable"
    topk: int = 300
    iou: float = 0.7
    conf: float = 0.25
    normalize: bool = False
    layout: str = "efficientnms"

    def problem(self) -> str | None:
        """Why this configuration cannot be built, or None."""
        if self.flavor not in FLAVORS:
            return f"unknown NMS flavour {self.flavor!r}; choose from {', '.join(FLAVORS)}"
        if self.layout not in LAYOUTS:
            return f"unknown NMS output layout {self.layout!r}; choose from {', '.join(LAYOUTS)}"
        if self.layout == "ultralytics" and self.flavor != "portable":
            return "the ultralytics output layout is built on the portable flavour (--nms-flavor portable)"
        if self.layout == "ultralytics" and self.normalize:
            return "the ultralytics output layout has boxes in input pixels, as Ultralytics' own (no --normalize-boxes)"
        return None


class _Builder:
    """Appends uniquely named nodes and initializers to a graph."""

    def __init__(self, graph, prefix: str = "nms") -> None:
        self.graph = graph
        self.prefix = prefix
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"/{self.prefix}/{hint}_{self.count}"

    def const(self, hint: str, value) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int | list[str] = 1,
           domain: str = "", **attrs) -> str | list[str]:
        from onnx import helper

        names = outputs if isinstance(outputs, list) else [self.name(hint or op_type) for _ in range(outputs)]
        self.graph.node.append(helper.make_node(op_type, inputs, names, name=self.name(op_type), domain=domain,
                                                **attrs))
        return names[0] if len(names) == 1 else names


def _reduce_max(b: _Builder, x: str, axis: int, keepdims: int, opset: int) -> str:
    if opset >= 18:
        return b.op("ReduceMax", [x, b.const("axes", np.array([axis], np.int64))], keepdims=keepdims)
    return b.op("ReduceMax", [x], axes=[axis], keepdims=keepdims)


def add_nms(model, config: NmsConfig, raw_output: str, channels: int, anchors: int | str,
            input_hw: tuple[int, int] | None):
    """Replace ``raw_output`` ([B, channels = 4+C, anchors]) by the end-to-end outputs, in place: the four of
    TensorRT's EfficientNMS, or with ``config.layout == "ultralytics"`` one ``output0 [B, k, 6]``.

    A dynamic-shape model has symbolic ``anchors`` and no ``input_hw``: boxes are normalised by the size of
    the image the graph was given, and images with fewer than topk anchors still give topk rows.
    """
    from onnx import TensorProto, helper

    if (problem := config.problem()) is not None:
        raise ValueError(problem)
    graph = model.graph
    if config.layout == "ultralytics" and raw_output == ULTRALYTICS_OUTPUT:  # the name goes to the [B,k,6] output
        raw_output = _rename(graph, raw_output, "/nms/head_output")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    # torch.onnx leaves the head's channel and anchor dims symbolic; stating them lets shape inference
    # give every NMS tensor (and TensorRT's plugin inputs) static trailing dims.
    graph.value_info.append(helper.make_tensor_value_info(raw_output, TensorProto.FLOAT, ["batch", channels, anchors]))
    nc = channels - 4
    k = min(config.topk, anchors) if isinstance(anchors, int) else config.topk
    b = _Builder(graph)
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731

    xywh = b.op("Slice", [raw_output, b.const("s", i64([0])), b.const("e", i64([4])), b.const("ax", i64([1]))],
                "xywh_t")  # [B,4,A]
    scores = b.op("Slice", [raw_output, b.const("s", i64([4])), b.const("e", i64([channels])),
                            b.const("ax", i64([1]))], "scores")  # [B,C,A]
    best = _reduce_max(b, scores, 1, 0, opset)  # [B,A]
    best_cls = b.op("ArgMax", [scores], "best_class", axis=1, keepdims=0)  # [B,A] int64
    boxes_cs = b.op("Transpose", [xywh], "boxes_xywh", perm=[0, 2, 1])  # [B,A,4] centre/size
    xy = b.op("Slice", [boxes_cs, b.const("s", i64([0])), b.const("e", i64([2])), b.const("ax", i64([2]))])
    wh = b.op("Slice", [boxes_cs, b.const("s", i64([2])), b.const("e", i64([4])), b.const("ax", i64([2]))])
    half = b.op("Mul", [wh, b.const("half", np.array(0.5, np.float32))])
    corners = b.op("Concat", [b.op("Sub", [xy, half]), b.op("Add", [xy, half])], "boxes_xyxy", axis=2)

    names = {"num": "num_dets", "boxes": "det_boxes", "scores": "det_scores", "classes": "det_classes"}
    if config.flavor == "portable":
        raw_boxes, det_scores, det_classes, num = _portable(b, config, corners, best, best_cls, k)
    elif config.flavor == "tensorrt":
        onehot = b.op("OneHot", [best_cls, b.const("depth", i64([nc])),
                                 b.const("vals", np.array([0, 1], np.float32))], axis=1)  # [B,C,A]
        best_only = b.op("Mul", [onehot, b.op("Unsqueeze", [best, b.const("ax", i64([1]))])], "best_only")
        raw_boxes, det_scores, det_classes, num = _tensorrt(b, config, boxes_cs, best_only, k)
    else:
        raise ValueError(f"unknown NMS flavour {config.flavor!r}; choose from {', '.join(FLAVORS)}")
    if config.normalize and input_hw:
        h, w = input_hw
        raw_boxes = b.op("Div", [raw_boxes, b.const("wh", np.array([w, h, w, h], np.float32))])
    elif config.normalize:
        hw = b.op("Slice", [b.op("Shape", [graph.input[0].name]), b.const("s", i64([2])), b.const("e", i64([4])),
                            b.const("ax", i64([0]))], "input_hw")
        whwh = b.op("Gather", [b.op("Cast", [hw], to=1), b.const("order", i64([1, 0, 1, 0]))], "whwh", axis=0)
        raw_boxes = b.op("Div", [raw_boxes, whwh])
    del graph.output[:]
    if config.layout == "ultralytics":  # one [B,k,6] tensor: x1, y1, x2, y2, score, class (zeros past the last box)
        ax = b.const("ax", i64([2]))
        rows = [raw_boxes, b.op("Unsqueeze", [det_scores, ax]),
                b.op("Unsqueeze", [b.op("Cast", [det_classes], to=TensorProto.FLOAT), ax])]
        b.op("Concat", rows, outputs=[ULTRALYTICS_OUTPUT], axis=2)
        graph.output.append(helper.make_tensor_value_info(ULTRALYTICS_OUTPUT, TensorProto.FLOAT, ["batch", k, 6]))
        return model
    for src, dst in ((num, names["num"]), (raw_boxes, names["boxes"]), (det_scores, names["scores"]),
                     (det_classes, names["classes"])):
        b.op("Identity", [src], outputs=[dst])
    graph.output.extend([
        helper.make_tensor_value_info(names["num"], TensorProto.INT32, ["batch", 1]),
        helper.make_tensor_value_info(names["boxes"], TensorProto.FLOAT, ["batch", k, 4]),
        helper.make_tensor_value_info(names["scores"], TensorProto.FLOAT, ["batch", k]),
        helper.make_tensor_value_info(names["classes"], TensorProto.INT32, ["batch", k]),
    ])
    if config.flavor == "tensorrt" and not any(o.domain == TRT_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(TRT_DOMAIN, 1))
    return model


def _rename(graph, old: str, new: str) -> str:
    """Rename tensor ``old`` wherever a node makes or reads it."""
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]
    return new


def _portable(b: _Builder, config: NmsConfig, corners: str, best: str, best_cls: str, k: int):
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    shift = b.op("Mul", [b.op("Cast", [best_cls], to=1), b.const("offset", np.array(CLASS_OFFSET, np.float32))])
    shifted = b.op("Add", [corners, b.op("Unsqueeze", [shift, b.const("ax", i64([2]))])], "shifted")  # [B,A,4]
    one_class = b.op("Unsqueeze", [best, b.const("ax", i64([1]))], "best_scores")  # [B,1,A]
    # center_point_box=0: corner boxes (the operator is symmetric in x and y, so xyxy serves as yxyx).
    selected = b.op("NonMaxSuppression", [shifted, one_class, b.const("max_per_class", i64([k])),
                                          b.const("iou", np.array([config.iou], np.float32)),
                                          b.const("conf", np.array([config.conf], np.float32))],
                    "selected", center_point_box=0)  # [K,3] (batch, 0, box)
    pairs = b.op("Gather", [selected, b.const("cols", i64([0, 2]))], "pairs", axis=1)  # [K,2] (batch, box)
    kept = b.op("GatherND", [best, pairs], "kept_scores")  # [K]
    # Scatter kept scores into a [B, max(A, k)] grid filled with -1, then TopK pads every image to k rows
    # (a small dynamic-shape input can have fewer than k anchors; the padding columns index no box).
    shape = b.op("Shape", [best])  # [B, A]
    batch = b.op("Slice", [shape, b.const("s", i64([0])), b.const("e", i64([1])), b.const("ax", i64([0]))])
    count = b.op("Slice", [shape, b.const("s", i64([1])), b.const("e", i64([2])), b.const("ax", i64([0]))])  # [A]
    width = b.op("Max", [count, b.const("k", i64([k]))])
    grid = b.op("ConstantOfShape", [b.op("Concat", [batch, width], axis=0)], "grid", value=_float_tensor(-1.0))
    dense = b.op("ScatterND", [grid, pairs, kept], "dense")
    top_scores, top_idx = b.op("TopK", [dense, b.const("k", i64([k]))], outputs=2, axis=1, largest=1, sorted=1)
    last = b.op("Sub", [count, b.const("one", i64([1]))])
    top_idx = b.op("Min", [top_idx, last], "top_idx")  # padding rows point at a real box, then masked
    valid = b.op("Greater", [top_scores, b.const("floor", np.array(-0.5, np.float32))], "valid")  # [B,k]
    num = b.op("ReduceSum", [b.op("Cast", [valid], to=6), b.const("ax", i64([1]))], "num", keepdims=1)
    det_scores = b.op("Where", [valid, top_scores, b.const("zero", np.array(0.0, np.float32))])
    idx4 = b.op("Expand", [b.op("Unsqueeze", [top_idx, b.const("ax", i64([2]))]),
                           b.op("Concat", [b.op("Shape", [top_idx]), b.const("four", i64([4]))], axis=0)])
    boxes = b.op("GatherElements", [corners, idx4], axis=1)  # [B,k,4]
    valid3 = b.op("Unsqueeze", [valid, b.const("ax", i64([2]))])
    det_boxes = b.op("Where", [valid3, boxes, b.const("zero", np.array(0.0, np.float32))])
    classes = b.op("Cast", [b.op("GatherElements", [best_cls, top_idx], axis=1)], to=6)
    det_classes = b.op("Where", [valid, classes, b.const("zero", np.array(0, np.int32))])
    return det_boxes, det_scores, det_classes, num


def _tensorrt(b: _Builder, config: NmsConfig, boxes_cs: str, best_only: str, k: int):
    scores_bac = b.op("Transpose", [best_only], "scores_bac", perm=[0, 2, 1])  # [B,A,C]
    # Attributes as documented for TensorRT's efficientNMSPlugin; outputs are always box corners.
    num, boxes, scores, classes = b.op(
        "EfficientNMS_TRT", [boxes_cs, scores_bac], outputs=4, domain=TRT_DOMAIN,
        background_class=-1, box_coding=1, iou_threshold=float(config.iou), max_output_boxes=int(k),
        plugin_version="1", score_activation=0, score_threshold=float(config.conf), class_agnostic=0,
    )
    return boxes, scores, classes, num


def _float_tensor(value: float):
    from onnx import TensorProto, helper

    return helper.make_tensor("value", TensorProto.FLOAT, [1], [value])


def tensorrt_node(model):
    """The EfficientNMS_TRT node of a tensorrt-flavour graph (for inspection and tests)."""
    return next(n for n in model.graph.node if n.op_type == "EfficientNMS_TRT")
