#!/usr/bin/env python3
"""Evaluate Rego with OPA's own Go evaluator (libopabridge.so from the PyPI package
opa-golib-python-bindings) for lockstep's differential tests.

Usage: opa_eval.py LIBOPABRIDGE_SO < request.json > response.json

request  = {"modules": [{"path": str, "source": str}], "data": {...},
            "queries": [str, ...], "inputs": [any, ...]}
response = {"results": [[<result per query> for each query] for each input]}
A result is {"value": <first expression value>} when defined, {"undefined": true}
when the result set is empty, or {"error": {"code","message"}} when OPA failed.

Raw ctypes on the C ABI (see ../shared/bench/opa-golib/README.md) rather than the
wheel's wrapper, whose package metadata asks for Python 3.14.
"""
import ctypes
import json
import sys


def load(path):
    lib = ctypes.CDLL(path)
    lib.OpaNew.restype = ctypes.c_uint64
    lib.OpaNew.argtypes = []
    lib.OpaDestroy.restype = None
    lib.OpaDestroy.argtypes = [ctypes.c_uint64]
    lib.OpaFreeString.restype = None
    lib.OpaFreeString.argtypes = [ctypes.c_void_p]
    for name in ("OpaAddPolicy", "OpaAddData"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_char_p]
    lib.OpaEvalQuery.restype = ctypes.c_void_p
    lib.OpaEvalQuery.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_int]
    return lib


def call(lib, fn, *args):
    ptr = fn(*args)
    if not ptr:
        raise RuntimeError("bridge returned NULL")
    try:
        return json.loads(ctypes.string_at(ptr).decode("utf-8"))
    finally:
        lib.OpaFreeString(ptr)


def main():
    lib = load(sys.argv[1])
    req = json.load(sys.stdin)
    h = lib.OpaNew()
    try:
        for m in req["modules"]:
            env = call(lib, lib.OpaAddPolicy, h, m["path"].encode(), m["source"].encode())
            if "error" in env:
                sys.exit("OPA refused module %s: %s" % (m["path"], env["error"]))
        env = call(lib, lib.OpaAddData, h, b"", json.dumps(req.get("data", {})).encode())
        if "error" in env:
            sys.exit("OPA refused data: %s" % env["error"])
        out = []
        for inp in req["inputs"]:
            row = []
            enc = json.dumps(inp).encode()
            for q in req["queries"]:
                env = call(lib, lib.OpaEvalQuery, h, q.encode(), enc, 0, 0)
                if "error" in env:
                    row.append({"error": env["error"]})
                    continue
                rs = env.get("result") or []
                if not rs:
                    row.append({"undefined": True})
                else:
                    row.append({"value": rs[0]["expressions"][0]["value"]})
            out.append(row)
        json.dump({"results": out}, sys.stdout)
    finally:
        lib.OpaDestroy(h)


if __name__ == "__main__":
    main()
