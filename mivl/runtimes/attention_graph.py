"""InternViT's attention in an ONNX graph: one fused node for ONNX Runtime, written out for TensorRT.

The exporter traces each block's attention as standard ops, which is what the INT8 quantiser and
TensorRT's parser read:

    x (n, t, 3c) -> Reshape (n, t, 3, h, d) -> Transpose (2, 0, 3, 1, 4) -> Split (axis 0) -> Squeeze x3
    q * d^-0.5 @ Transpose(k) -> Softmax -> @ v -> Transpose (0, 2, 1, 3) -> Reshape (n, t, c)

ONNX Runtime runs that as separate kernels and materialises the (n, h, t, t) scores (67 MB per
layer and tile at t = 1025). `fuse` replaces each such block by Split(x, [c, c, c]) on the last axis
(the qkv projection's rows are [q; k; v], each head-major) and one com.microsoft.MultiHeadAttention
node, which ONNX Runtime's CPU and CUDA providers run as one kernel. `expand` is the inverse, in
standard ops only, for consumers without Microsoft's contrib ops (TensorRT's ONNX parser).

Only blocks that match exactly are rewritten (heads, head size, permutations, split and output
shape checked; the scale is carried over as the node's `scale`); any other graph is left as it is
and the count says how many were fused.
"""
from __future__ import annotations

import numpy as np

MS_DOMAIN = "com.microsoft"
FUSED_OP = "MultiHeadAttention"


def _index(graph):
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def _constants(graph, most: int = 16) -> dict:
    """Small constant tensors (shapes, scales, split sizes) by name: initializers and Constant nodes
    of at most `most` elements (the weights are never converted)."""
    from onnx import numpy_helper

    small = lambda t: int(np.prod(t.dims)) <= most   # noqa: E731
    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer if small(i)}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value" and small(n.attribute[0].t):
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _match(softmax, producer, consumers, constants, heads: int):
    """(qkv input, merged output, name prefix, head size, scale) of the written-out attention around
    `softmax`, or None."""
    def one(tensor, op):
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def made_by(tensor, op):
        node = producer.get(tensor)
        return node if node is not None and node.op_type == op else None

    if _attr(softmax, "axis", -1) not in (-1, 3):
        return None
    qk = made_by(softmax.input[0], "MatMul")
    av = one(softmax.output[0], "MatMul")
    if qk is None or av is None or av.input[0] != softmax.output[0]:
        return None
    back = one(av.output[0], "Transpose")
    merge = back and one(back.output[0], "Reshape")
    mul = made_by(qk.input[0], "Mul")
    k_t = made_by(qk.input[1], "Transpose")
    if not (merge and mul and k_t) or list(_attr(back, "perm")) != [0, 2, 1, 3] \
            or list(_attr(k_t, "perm")) != [0, 1, 3, 2]:
        return None
    scale_name = mul.input[1] if mul.input[1] in constants else mul.input[0]
    q_in = mul.input[0] if scale_name == mul.input[1] else mul.input[1]
    squeezes = [made_by(t, "Squeeze") for t in (q_in, k_t.input[0], av.input[1])]
    if None in squeezes or scale_name not in constants:
        return None
    split = made_by(squeezes[0].input[0], "Split")
    if split is None or [s.input[0] for s in squeezes] != list(split.output) or _attr(split, "axis", 0) != 0:
        return None
    perm = made_by(split.input[0], "Transpose")
    shape = perm and made_by(perm.input[0], "Reshape")
    if not shape or list(_attr(perm, "perm")) != [2, 0, 3, 1, 4]:
        return None
    target = _shape_tail(shape.input[1], producer, constants)
    if target is None or target[0] != 3 or target[1] != heads:
        return None
    head_dim = target[2]
    scale = np.asarray(constants[scale_name], np.float64).reshape(-1)
    if scale.size != 1 or _last_dim(merge.input[1], producer, constants) not in (-1, heads * head_dim):
        return None
    base = softmax.name.rsplit("/", 1)[0] or softmax.name
    return shape.input[0], merge.output[0], base, head_dim, float(scale[0])


def _last_dim(tensor, producer, constants):
    """c of the (n, t, c) Reshape target that merges the heads, or None; -1 where the traced graph
    reads it from the block input's shape (a valid graph then has c = heads * head_dim)."""
    target = _reshape_target(tensor, 3, producer, constants)
    return target and target[2]


def _shape_tail(tensor, producer, constants):
    """The last three entries (3, heads, head_dim) of the (n, t, 3, heads, head_dim) Reshape target
    `tensor` as ints, or None unless all three are constants."""
    target = _reshape_target(tensor, 5, producer, constants)
    return target[2:] if target and -1 not in target[2:] else None


def _reshape_target(tensor, rank: int, producer, constants):
    """The `rank` entries of a Reshape target as ints, or None. The traced graph builds a target
    with Concat from constants and sizes read off the block input (Gather(Shape(x), i), at the
    target's own position i): such an entry is -1, the input's own size there."""
    if tensor in constants:
        v = np.asarray(constants[tensor]).reshape(-1)
        return [int(x) for x in v] if v.size == rank else None
    concat = producer.get(tensor)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != rank:
        return None
    sizes = []
    for i, t in enumerate(concat.input):
        if t in constants:
            sizes.append(int(np.asarray(constants[t]).reshape(-1)[0]))
            continue
        node = producer.get(t)
        if node is not None and node.op_type == "Unsqueeze":
            node = producer.get(node.input[0])
        if node is None or node.op_type != "Gather" or node.input[1] not in constants \
                or np.asarray(constants[node.input[1]]).reshape(-1).tolist() != [i]:
            return None
        shape = producer.get(node.input[0])
        if shape is None or shape.op_type != "Shape":
            return None
        sizes.append(-1)
    return sizes


def _prune(graph) -> None:
    """Drop nodes, initializers and value_infos nothing reaches the outputs through."""
    needed = {o.name for o in graph.output}
    alive = []
    for n in reversed(list(graph.node)):
        if any(o in needed for o in n.output):
            alive.append(n)
            needed.update(i for i in n.input if i)
    alive.reverse()
    del graph.node[:]
    graph.node.extend(alive)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    produced = used | {o for n in graph.node for o in n.output}
    infos = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def _ensure_opset(model, domain: str, version: int) -> None:
    from onnx import helper

    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, version))


def fuse(model, heads: int) -> int:
    """Rewrite every written-out attention block of `model` (in place) as Split + MultiHeadAttention;
    returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer, consumers = _index(graph)
    constants = _constants(graph)
    found = {}
    for sm in (n for n in graph.node if n.op_type == "Softmax"):
        m = _match(sm, producer, consumers, constants, heads)
        if m is not None:
            found[m[1]] = m                        # by the merged output: node names may be empty
    if not found:
        return 0
    nodes = []
    for n in graph.node:
        nodes.append(n)
        if not n.output or n.output[0] not in found:
            continue
        x, out, base, head_dim, scale = found[n.output[0]]
        c = heads * head_dim
        sizes = f"{base}/attention_split_sizes"
        graph.initializer.append(numpy_helper.from_array(np.array([c, c, c], np.int64), sizes))
        qkv = [f"{base}/attention_{s}" for s in "qkv"]
        nodes[-1] = helper.make_node("Split", [x, sizes], qkv, axis=-1, name=f"{base}/attention_split")
        nodes.append(helper.make_node(FUSED_OP, qkv, [out], domain=MS_DOMAIN, num_heads=heads, scale=scale,
                                      name=f"{base}/attention"))
    del graph.node[:]
    graph.node.extend(nodes)
    _ensure_opset(model, MS_DOMAIN, 1)
    _prune(graph)
    return len(found)


def fused_count(model) -> int:
    return sum(n.op_type == FUSED_OP and n.domain == MS_DOMAIN for n in model.graph.node)


def expand(model) -> int:
    """Rewrite every MultiHeadAttention node of `model` (in place) as standard ONNX ops (Reshape,
    Transpose, Mul, MatMul, Softmax); returns how many. Its inputs must be (n, t, c) query, key and
    value (what `fuse` writes); the scale takes the query's float type (CastLike)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer, _ = _index(graph)
    constants = _constants(graph)
    nodes, count = [], 0
    for n in graph.node:
        if n.op_type != FUSED_OP or n.domain != MS_DOMAIN:
            nodes.append(n)
            continue
        if len([i for i in n.input if i]) != 3 or len(n.input) > 3:
            raise ValueError(f"{n.name}: only query/key/value MultiHeadAttention can be written out")
        heads = int(_attr(n, "num_heads"))
        base, count = n.name or f"attention_{count}", count + 1
        head_dim = _head_dim(graph, producer, constants, n.input[0], heads)
        scale = _attr(n, "scale")
        scale = head_dim ** -0.5 if scale is None else scale
        split_shape = f"{base}/heads_shape"
        merge_shape = f"{base}/merge_shape"
        scale_name = f"{base}/scale_f32"
        graph.initializer.extend([
            numpy_helper.from_array(np.array([0, 0, heads, head_dim], np.int64), split_shape),
            numpy_helper.from_array(np.array([0, 0, heads * head_dim], np.int64), merge_shape),
            numpy_helper.from_array(np.array(scale, np.float32), scale_name)])
        q, k, v = (f"{base}/{s}_heads" for s in "qkv")
        t = lambda s: f"{base}/{s}"   # noqa: E731
        nodes += [
            helper.make_node("Reshape", [n.input[0], split_shape], [t("q4")], name=t("q_reshape")),
            helper.make_node("Transpose", [t("q4")], [t("q_t")], perm=[0, 2, 1, 3], name=t("q_transpose")),
            helper.make_node("CastLike", [scale_name, t("q_t")], [t("scale")], name=t("scale_cast")),
            helper.make_node("Mul", [t("q_t"), t("scale")], [q], name=t("q_scale")),
            helper.make_node("Reshape", [n.input[1], split_shape], [t("k4")], name=t("k_reshape")),
            helper.make_node("Transpose", [t("k4")], [k], perm=[0, 2, 3, 1], name=t("k_transpose")),
            helper.make_node("Reshape", [n.input[2], split_shape], [t("v4")], name=t("v_reshape")),
            helper.make_node("Transpose", [t("v4")], [v], perm=[0, 2, 1, 3], name=t("v_transpose")),
            helper.make_node("MatMul", [q, k], [t("scores")], name=t("qk")),
            helper.make_node("Softmax", [t("scores")], [t("probs")], axis=-1, name=t("softmax")),
            helper.make_node("MatMul", [t("probs"), v], [t("ctx")], name=t("pv")),
            helper.make_node("Transpose", [t("ctx")], [t("ctx_t")], perm=[0, 2, 1, 3], name=t("ctx_transpose")),
            helper.make_node("Reshape", [t("ctx_t"), merge_shape], [n.output[0]], name=t("merge")),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    _prune(graph)
    still_used = any(n.domain == MS_DOMAIN for n in graph.node)      # other contrib ops keep the import
    kept = [o for o in model.opset_import if o.domain != MS_DOMAIN or still_used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return count


def _head_dim(graph, producer, constants, query: str, heads: int) -> int:
    """d of (n, t, h, d): from the Split sizes `fuse` writes, else from the query's value_info."""
    split = producer.get(query)
    if split is not None and split.op_type == "Split" and len(split.input) > 1 and split.input[1] in constants:
        sizes = np.asarray(constants[split.input[1]]).reshape(-1)
        return int(sizes[list(split.output).index(query)]) // heads
    for v in list(graph.value_info) + list(graph.input):
        if v.name == query:
            dim = v.type.tensor_type.shape.dim[-1]
            if dim.HasField("dim_value"):
                return int(dim.dim_value) // heads
    raise ValueError(f"cannot tell the hidden size of {query!r} to write its attention out")


def fuse_file(path, heads: int) -> int:
    """`fuse` an ONNX file in place (written atomically); returns how many blocks were fused."""
    import os

    import onnx

    model = onnx.load(str(path))
    count = fuse(model, heads)
    if count:
        tmp = f"{path}.partial"
        onnx.save(model, tmp)
        os.replace(tmp, path)
    return count


def portable_graph(path) -> bytes:
    """The ONNX file at `path` as bytes in standard ops only: fused attention written out (for
    TensorRT's parser, which has no Microsoft contrib ops)."""
    try:
        import onnx
    except ImportError:
        from ..errors import MivlError
        raise MivlError("reading the vision graph for TensorRT needs the onnx package: "
                        "pip install onnx==1.23.2 (or 'mivl[gpu]')") from None

    model = onnx.load(str(path))
    expand(model)
    return model.SerializeToString()
