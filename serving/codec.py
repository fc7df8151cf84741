"""The one JSON <-> numpy tensor codec of TF Serving's REST API, shared by the server and the clients.

Follows tensorflow_serving/util/json_tensor.cc:

* requests: the row format ``{"instances": [...]}`` (one item per example: a value, or an object
  ``{input name: value}`` when the signature has several inputs) or the columnar format
  ``{"inputs": value | {input name: value}}``, with an optional ``"signature_name"``;
* responses: ``{"predictions": ...}`` for a row request, ``{"outputs": ...}`` for a columnar one
  (a bare value when there is a single output);
* binary strings travel as ``{"b64": "<base64>"}``; string outputs whose name ends in ``_bytes``
  are always written so, other strings as UTF-8 text when they are valid UTF-8;
* leaves must match the tensor's dtype exactly (no numbers for strings, no floats for ints,
  integers in range, no bools for numbers), lists must be rectangular.

Requests and responses of Classify/Regress carry `tf.Example` features as JSON objects
(`example_to_json`, `example_from_json`). Nothing here imports TensorFlow: a dtype is a numpy dtype,
``object`` / ``"string"`` for strings, or anything with ``as_numpy_dtype`` (a ``tf.DType``).
Malformed input raises `CodecError` (a ValueError); the server answers it with 400 / INVALID_ARGUMENT.

Example:
    >>> import numpy as np
    >>> body = encode_predict_request({"text": np.array([b"a fine film"], dtype=object)})
    >>> body
    {'inputs': {'text': ['a fine film']}}
    >>> arrays, fmt = decode_predict_request(loads(dumps(body)), {"text": "string"})
    >>> arrays["text"].tolist(), fmt
    ([b'a fine film'], 'columnar')
    >>> decode_predict_response({"outputs": {"probabilities": [[0.25, 0.75]]}})["probabilities"].shape
    (1, 2)
"""

import base64
import binascii
import json
import math

import numpy as np

# Deepest list nesting accepted in a tensor value (TensorFlow's own limit is 254; numpy's 64).
MAX_RANK = 32


class CodecError(ValueError):
    """A JSON body that cannot be converted: the client's fault (HTTP 400, INVALID_ARGUMENT)."""


# ------------------------------------------------------------------------------------------ JSON text
def _parse_float(literal):
    value = float(literal)
    if math.isinf(value):
        raise CodecError(f"JSON Parse error: Number too big to be stored in double: {literal[:40]}")
    return value


def loads(data):
    """Parse a request or response body (bytes or str) as JSON; any failure is a `CodecError`.

    Like TF Serving's parser it accepts ``NaN``/``Infinity`` literals but rejects numbers that
    overflow a double, invalid UTF-8, lone UTF-16 surrogates and nesting deeper than Python's
    recursion limit allows (a 200 KB body of ``[[[[...`` is a parse error, not a crash)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CodecError(f"JSON Parse error: Invalid encoding in string (byte {e.start})") from None
    if not data.strip():
        raise CodecError("JSON Parse error: The document is empty")
    try:
        return json.loads(data, parse_float=_parse_float)
    except CodecError:
        raise
    except RecursionError:
        raise CodecError("JSON Parse error: the document is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise CodecError(f"JSON Parse error: {e.msg} at offset {e.pos}") from None
    except ValueError as e:  # e.g. an integer literal over Python's 4300-digit limit
        raise CodecError(f"JSON Parse error: {str(e)[:200]}") from None


def dumps(doc):
    """Serialize a body as compact UTF-8 JSON bytes (``NaN``/``Infinity`` written as TF Serving does)."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate somewhere (e.g. echoed in an error): escape it
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def debug_string(val, limit=200):
    """A short JSON rendering of `val` for error messages; bounded work on any input."""
    out, budget = [], [limit + 1]

    def emit(s):
        out.append(s)
        budget[0] -= len(s)

    def walk(v, depth):
        if budget[0] <= 0:
            return
        if depth > 64:
            emit("...")
        elif isinstance(v, list):
            emit("[")
            for i, x in enumerate(v):
                if budget[0] <= 0:
                    break
                if i:
                    emit(",")
                walk(x, depth + 1)
            emit("]")
        elif isinstance(v, dict):
            emit("{")
            for i, (k, x) in enumerate(v.items()):
                if budget[0] <= 0:
                    break
                if i:
                    emit(",")
                emit(json.dumps(str(k)[:limit]) + ":")
                walk(x, depth + 1)
            emit("}")
        elif isinstance(v, str):
            emit(json.dumps(v[:limit]))
        else:
            emit(json.dumps(v))

    walk(val, 0)
    s = "".join(out)
    return s if len(s) <= limit else s[:limit] + "..."


def json_type(val):
    """rapidjson's type name of a parsed JSON value, as TF Serving's messages say it."""
    if val is None:
        return "NULL"
    if isinstance(val, bool):
        return "BOOL"
    if isinstance(val, (int, float)):
        return "NUMBER"
    if isinstance(val, str):
        return "STRING"
    if isinstance(val, list):
        return "ARRAY"
    return "OBJECT"


# --------------------------------------------------------------------------------------------- dtypes
def _np_dtype(dtype):
    """numpy dtype for a numpy/tf dtype or a name; ``object`` for strings."""
    if hasattr(dtype, "as_numpy_dtype"):  # tf.DType, without importing TensorFlow here
        if getattr(dtype, "name", None) == "string":
            return np.dtype(object)
        dtype = dtype.as_numpy_dtype
    if dtype in ("string", str, bytes, object):
        return np.dtype(object)
    dt = np.dtype(dtype)
    return np.dtype(object) if dt.kind in "OSU" else dt


def _dtype_name(dt):
    if dt == object:
        return "string"
    return {"float32": "float", "float64": "double"}.get(dt.name, dt.name)


def is_b64(val):
    return isinstance(val, dict) and len(val) == 1 and "b64" in val


def b64_decode(val):
    s = val.get("b64") if isinstance(val, dict) else None
    if not isinstance(s, str):
        raise CodecError(f"JSON Value: {debug_string(val)} not formatted correctly for base64 data")
    try:
        raw = s.encode("ascii")
        alt = b"-_" if (b"-" in raw or b"_" in raw) else None
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=alt, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise CodecError("Unable to base64 decode") from None


def _utf8(s):
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        raise CodecError(f"JSON Value: {debug_string(s)} is not valid Unicode (lone surrogate)") from None


def _leaf(val, dt):
    """One JSON leaf -> Python value of numpy dtype `dt` (json_tensor.cc AddValueToTensor rules)."""
    ok = True
    if dt == object:
        if isinstance(val, str):
            return _utf8(val)
        if is_b64(val):
            return b64_decode(val)
        ok = False
    elif dt.kind == "b":
        ok = isinstance(val, bool)
    elif dt.kind == "f":
        ok = isinstance(val, (int, float)) and not isinstance(val, bool)
        if ok and (isinstance(val, int) or math.isfinite(val)) and abs(val) > float(np.finfo(dt).max):
            raise CodecError(f"JSON Value: {debug_string(val)} is out of range for type: {_dtype_name(dt)}")
    elif dt.kind in "iu":
        ok = isinstance(val, int) and not isinstance(val, bool)
        if ok and not (np.iinfo(dt).min <= val <= np.iinfo(dt).max):
            raise CodecError(f"JSON Value: {debug_string(val)} is out of range for type: {_dtype_name(dt)}")
    elif dt.kind == "c":
        raise CodecError(f"Conversion of JSON Value: {debug_string(val)} to type: {dt.name} is not supported")
    if not ok:
        raise CodecError(f"JSON Value: {debug_string(val)} Type: {json_type(val)} is not of expected type: "
                         f"{_dtype_name(dt)}")
    return val


def _dense_shape(val):
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if len(shape) > MAX_RANK:
            raise CodecError(f"JSON Value: lists nested deeper than {MAX_RANK} levels")
        if not val:
            break
        val = val[0]
    return shape


# ------------------------------------------------------------------------------- JSON value <-> array
def json_to_array(val, dtype):
    """A JSON value (nested lists of leaves / b64 objects) -> np.ndarray of `dtype`."""
    dt = _np_dtype(dtype)
    shape = _dense_shape(val)
    flat = []
    # Iterative walk (no recursion): a stack of (list, level) with per-level size checks.
    stack = [(val, 0)]
    while stack:
        v, level = stack.pop()
        if not isinstance(v, list):
            if level != len(shape):
                raise CodecError(f"JSON Value: {debug_string(v)} found at incorrect level: {level + 1} in the "
                                 f"JSON DOM. Expected at level: {len(shape)}")
            flat.append(_leaf(v, dt))
            continue
        if level >= len(shape):
            raise CodecError(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
        if len(v) != shape[level]:
            raise CodecError(f"Encountered list at unexpected size: {len(v)} at level: {level} expected size: "
                             f"{shape[level]}")
        stack.extend((x, level + 1) for x in reversed(v))
    if dt == object:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    return np.array(flat, dtype=dt).reshape(shape)


def _as_text_or_b64(b, force_b64):
    if not force_b64:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            pass  # not text: base64 rather than invalid JSON
    return {"b64": base64.b64encode(b).decode("ascii")}


def _json_leaf(v, force_b64):
    if isinstance(v, (bytes, np.bytes_)):
        return _as_text_or_b64(bytes(v), force_b64)
    if isinstance(v, str):
        return _as_text_or_b64(v.encode("utf-8", "surrogatepass"), force_b64) if force_b64 else v
    if isinstance(v, np.float32):
        return float(str(v))  # shortest decimal that round-trips float32, as TF Serving writes
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def array_to_json(arr, name=""):
    """np.ndarray (or array-like) -> JSON value; strings as text, or ``{"b64"}`` when not UTF-8 or
    when `name` ends in ``_bytes``."""
    arr = to_array(arr)
    force_b64 = name.endswith("_bytes")
    if arr.ndim == 0:
        return _json_leaf(arr[()], force_b64)
    if arr.dtype in (np.float32, np.float16):
        # Shortest decimal that round-trips each float32 (TF Serving writes 0.1, not 0.100000001).
        return arr.astype(str).astype(np.float64).tolist()
    if arr.dtype != object:
        return arr.tolist()
    if arr.ndim == 1:
        return [_json_leaf(v, force_b64) for v in arr]
    return [array_to_json(a, name) for a in arr]


def to_array(v):
    """Array-like -> np.ndarray; Python str become UTF-8 bytes in an object array (TF's DT_STRING)."""
    if isinstance(v, np.ndarray) and v.dtype.kind not in "SU":
        return v
    try:
        arr = np.asarray(v)
    except (UnicodeError, ValueError):  # e.g. str and non-ASCII bytes mixed
        arr = np.array(v, dtype=object)
    if arr.dtype.kind in "SUO":
        out = np.empty(arr.shape, dtype=object)
        flat = out.reshape(-1)
        for i, s in enumerate(arr.reshape(-1).tolist()):
            flat[i] = s.encode("utf-8") if isinstance(s, str) else bytes(s) if isinstance(s, np.bytes_) else s
        return out
    return arr


def from_json(val):
    """A JSON value of unknown dtype (a response) -> np.ndarray: strings and b64 as bytes objects,
    numbers as int64/float64, bools as bool."""
    shape = _dense_shape(val)
    flat = []
    stack = [val]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        elif is_b64(v):
            flat.append(b64_decode(v))
        elif isinstance(v, str):
            flat.append(v.encode("utf-8", "surrogatepass"))
        else:
            flat.append(v)
    if len(flat) != int(np.prod(shape, dtype=np.int64)):
        raise CodecError(f"JSON Value: {debug_string(val)} is not a rectangular array")
    if any(isinstance(x, bytes) for x in flat):
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    return np.array(flat).reshape(shape)


# ---------------------------------------------------------------------------------- predict bodies
def encode_predict_request(inputs, signature_name=None, fmt="columnar"):
    """dict name -> array-like -> request body (``"inputs"`` columnar, or ``"instances"`` rows)."""
    arrays = {k: to_array(v) for k, v in inputs.items()}
    body = {}
    if signature_name:
        body["signature_name"] = signature_name
    if fmt == "columnar":
        body["inputs"] = {k: array_to_json(v, k) for k, v in arrays.items()}
        return body
    if fmt != "row":
        raise ValueError(f"fmt must be 'columnar' or 'row', got {fmt!r}")
    sizes = {v.shape[0] if v.ndim else None for v in arrays.values()}
    if len(sizes) != 1 or None in sizes:
        raise ValueError("the row format needs every input to share its 0th dimension")
    cols = {k: array_to_json(v, k) for k, v in arrays.items()}
    n = sizes.pop()
    if len(cols) == 1:
        body["instances"] = next(iter(cols.values()))
    else:
        body["instances"] = [{k: c[i] for k, c in cols.items()} for i in range(n)]
    return body


def _check_rows(n, what, max_rows):
    if max_rows is not None and n > max_rows:
        raise CodecError(f"{what}: {n} rows is more than the maximum input batch size {max_rows}")


def decode_predict_request(doc, input_dtypes, max_rows=None):
    """Request body (parsed) -> (dict name -> np.ndarray, ``"row"`` | ``"columnar"``).

    `input_dtypes`: the signature's inputs, name -> dtype. `max_rows`: reject (before converting
    anything) a request whose batch dimension is larger."""
    dtypes = {k: _np_dtype(v) for k, v in input_dtypes.items()}
    if not isinstance(doc, dict):
        raise CodecError(f"JSON Value: {debug_string(doc)} Is not object")
    if "instances" in doc and "inputs" in doc:
        raise CodecError(f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of "
                         "'inputs' or 'instances' keys to exist ")
    names = sorted(dtypes)
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise CodecError(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise CodecError(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        _check_rows(len(instances), "'instances'", max_rows)

        def is_obj(v):
            return isinstance(v, dict) and not is_b64(v)

        as_objects = is_obj(instances[0])
        if not as_objects and len(names) > 1:
            raise CodecError("instances is a plain list, but expecting list of objects as multiple input tensors "
                             f"required as per tensorinfo_map (inputs: {names})")
        columns = {n: [] for n in names}
        for i, item in enumerate(instances):
            if as_objects:
                if not is_obj(item):
                    raise CodecError(f"Expecting object but got list at item {i} of input list")
                for k in item:
                    if k not in dtypes:
                        raise CodecError(f"Failed to process element: {i} key: {debug_string(k)} of 'instances' "
                                         f"list. Error: JSON object: does not have named input: {debug_string(k)}")
                if len(item) != len(names):
                    raise CodecError(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                     f"{debug_string(item)} keys must be equal to: {','.join(names)}")
                pairs = item.items()
            else:
                if is_obj(item):
                    raise CodecError(f"Expecting value/list but got object at item {i} of input list")
                pairs = [(names[0], item)]
            for k, v in pairs:
                try:
                    arr = json_to_array(v, dtypes[k])
                except CodecError as e:
                    raise CodecError(f"Failed to process element: {i} key: {k} of 'instances' list. Error: "
                                     f"{e}") from None
                if columns[k] and columns[k][0].shape != arr.shape:
                    raise CodecError(f"Failed to process element: {i} key: {k} of 'instances' list. Error: "
                                     f"Expecting shape {list(columns[k][0].shape)} but got: {list(arr.shape)}")
                columns[k].append(arr)
        return {k: _stack(v, dtypes[k]) for k, v in columns.items()}, "row"
    if "inputs" in doc:
        val = doc["inputs"]
        if not isinstance(val, dict) or is_b64(val):
            if len(names) != 1:
                raise CodecError("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                 f"required as per tensorinfo_map (inputs: {names})")
            if isinstance(val, list):
                _check_rows(len(val), f"input '{names[0]}'", max_rows)
            return {names[0]: json_to_array(val, dtypes[names[0]])}, "columnar"
        extra = sorted(set(val) - set(dtypes))
        if extra:
            raise CodecError(f"Unknown named input(s): {debug_string(extra)} in 'inputs' object; the signature "
                             f"takes {names}")
        for name in names:
            if name not in val:
                raise CodecError(f"Missing named input: {name} in 'inputs' object.")
            if isinstance(val[name], list):
                _check_rows(len(val[name]), f"input '{name}'", max_rows)
        return {name: json_to_array(val[name], dtypes[name]) for name in names}, "columnar"
    raise CodecError("Missing 'inputs' or 'instances' key")


def _stack(arrays, dt):
    if dt == object:
        out = np.empty((len(arrays),) + arrays[0].shape, dtype=object)
        for i, a in enumerate(arrays):
            out[i, ...] = a
        return out
    return np.stack(arrays)


def encode_predict_response(outputs, fmt):
    """dict name -> np.ndarray -> ``{"predictions": ...}`` (fmt ``"row"``) or ``{"outputs": ...}``."""
    names = sorted(outputs)
    if fmt == "columnar":
        if len(names) == 1:
            return {"outputs": array_to_json(outputs[names[0]], names[0])}
        return {"outputs": {n: array_to_json(outputs[n], n) for n in names}}
    batch = None
    for n in names:
        if outputs[n].ndim == 0:
            raise CodecError(f"Tensor name: {n} has no shape information ")
        if batch is not None and outputs[n].shape[0] != batch:
            raise CodecError(f"Tensor name: {n} has inconsistent batch size: {outputs[n].shape[0]} expecting: "
                             f"{batch}")
        batch = outputs[n].shape[0]
    cols = {n: array_to_json(outputs[n], n) for n in names}
    if len(names) == 1:
        return {"predictions": cols[names[0]]}
    return {"predictions": [{n: cols[n][i] for n in names} for i in range(batch)]}


def decode_predict_response(doc, output_names=None):
    """Response body -> dict name -> np.ndarray. A bare single output (the body names no output) is
    returned under the first of `output_names` (a list, or a callable returning one, called only
    then: the signature's outputs), else under ``""``."""
    if not isinstance(doc, dict):
        raise CodecError(f"JSON Value: {debug_string(doc)} Is not object")

    def only():
        names = list(output_names() if callable(output_names) else output_names or [])
        return names[0] if names else ""

    if "outputs" in doc:
        out = doc["outputs"]
        if isinstance(out, dict) and not is_b64(out):
            return {k: from_json(v) for k, v in out.items()}
        return {only(): from_json(out)}
    if "predictions" in doc:
        rows = doc["predictions"]
        if not isinstance(rows, list):
            raise CodecError("'predictions' must be a list")
        if rows and all(isinstance(r, dict) and not is_b64(r) for r in rows):
            keys = list(rows[0])
            return {k: from_json([r.get(k) for r in rows]) for k in keys}
        return {only(): from_json(rows)}
    raise CodecError(f"JSON Value: {debug_string(doc)} has neither 'outputs' nor 'predictions'")


# --------------------------------------------------------------------------------- tf.Example JSON
def example_features(features):
    """{feature: value or list} -> {feature: (kind, [values])} with kind ``bytes_list`` /
    ``int64_list`` / ``float_list``: one typing rule for the gRPC and REST clients."""
    out = {}
    for name, value in features.items():
        vals = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if all(isinstance(x, (bytes, str, np.bytes_, np.str_)) for x in vals):
            out[name] = ("bytes_list", [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in vals])
        elif all(isinstance(x, (bool, int, np.integer, np.bool_)) for x in vals):
            out[name] = ("int64_list", [int(x) for x in vals])
        else:
            out[name] = ("float_list", [float(x) for x in vals])
    return out


def example_to_json(features):
    """Features dict -> one JSON example of a Classify/Regress body (bytes that are not UTF-8 as b64)."""
    out = {}
    for name, (kind, vals) in example_features(features).items():
        if kind == "bytes_list":
            vals = [_as_text_or_b64(v, False) for v in vals]
        value = features[name]
        out[name] = vals if isinstance(value, (list, tuple, np.ndarray)) else vals[0]
    return out


def example_from_json(val):
    """One JSON example -> {feature: (kind, [values])}, json_tensor.cc's typing rules."""
    if not isinstance(val, dict) or is_b64(val):
        raise CodecError(f"Example must be JSON object but got JSON {json_type(val)}")
    out = {}
    for name, content in val.items():
        values = content if isinstance(content, list) else [content]
        kind, vals = None, []
        for v in values:
            if v is None or isinstance(v, list) or (isinstance(v, dict) and not is_b64(v)):
                raise CodecError(f"Feature: {debug_string(name)} has element with unexpected JSON type: "
                                 f"{json_type(v)}")
            if isinstance(v, bool):
                k, x = "int64_list", int(v)
            elif isinstance(v, int):
                k, x = "int64_list", v
                if not -(2 ** 63) <= v < 2 ** 63:
                    raise CodecError(f"Feature: {debug_string(name)} has uint64_t element. Only int64_t is "
                                     "supported.")
            elif isinstance(v, float):
                k, x = "float_list", v
                if math.isfinite(v) and abs(v) > float(np.finfo(np.float32).max):
                    raise CodecError(f"Feature: {debug_string(name)} has a value out of range for float")
            elif isinstance(v, str):
                k, x = "bytes_list", _utf8(v)
            else:
                k, x = "bytes_list", b64_decode(v)
            if kind is not None and k != kind:
                raise CodecError(f"Unexpected element type in feature: {debug_string(name)} expecting type: "
                                 f"{kind.split('_')[0]}")
            kind = k
            vals.append(x)
        out[name] = (kind or "bytes_list", vals)
    return out


def decode_classify_request(doc, max_rows=None):
    """Classify/Regress body -> (context features or None, [example features])."""
    if not isinstance(doc, dict):
        raise CodecError(f"JSON Value: {debug_string(doc)} Is not object")
    context = example_from_json(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        raise CodecError(f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is expected "
                         "and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise CodecError(f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise CodecError(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    _check_rows(len(examples), "'examples'", max_rows)
    return context, [example_from_json(e) for e in examples]
