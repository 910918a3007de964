#!/usr/bin/env python3
"""Writes the seed corpus of the torch-checkpoint fuzz target (run once; the output is committed).

The pickles come from CPython's own Pickler driven the way torch.save drives it: stand-in
`torch.<Type>Storage` classes and `torch._utils._rebuild_tensor_v2` registered as modules, storages
turned into persistent ids ('storage', type, key, 'cpu', numel), and the state dict an OrderedDict
carrying `_metadata`. test_torch_checkpoint.cpp also reads these files: they are pickles baq did not
write. Standard library only; torch is not needed.
"""
import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called when writing")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
for name in ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage"):
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)


class Storage:
    def __init__(self, kind, key, values):
        self.kind, self.key, self.values = kind, key, values


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce_ex__(self, protocol):
        return (_rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, obj.kind), obj.key, "cpu", len(obj.values))
        return None


def state_dict():
    a = Storage("FloatStorage", "0", [0.25 * i for i in range(12)])
    b = Storage("HalfStorage", "1", [1.0, -2.0, 0.5, 3.0])
    sd = collections.OrderedDict()
    sd["model.layers.0.self_attn.q_proj.weight"] = Tensor(a, 0, (3, 4), (4, 1))
    sd["model.layers.0.self_attn.k_proj.weight"] = Tensor(a, 0, (4, 3), (1, 4))  # a transposed view
    sd["model.norm.weight"] = Tensor(b, 1, (3,), (1,))
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("model", {"version": 1})])
    return sd, {"0": a, "1": b}


def pickle_bytes(obj, protocol):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def storage_bytes(s):
    fmt = {"FloatStorage": "f", "HalfStorage": "e"}[s.kind]
    return struct.pack("<%d%s" % (len(s.values), fmt), *s.values)


def main():
    os.makedirs(OUT, exist_ok=True)
    sd, storages = state_dict()
    for protocol in (2, 4):
        with open(os.path.join(OUT, "state_dict_protocol%d.pkl" % protocol), "wb") as f:
            f.write(pickle_bytes(sd, protocol))
    # A whole checkpoint, laid out as torch.save does (stored entries).
    def entry(name):  # a fixed timestamp keeps the file byte-identical across runs
        return zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))

    with zipfile.ZipFile(os.path.join(OUT, "checkpoint.zip"), "w", zipfile.ZIP_STORED) as z:
        z.writestr(entry("archive/data.pkl"), pickle_bytes(sd, 2))
        for key, s in storages.items():
            z.writestr(entry("archive/data/" + key), storage_bytes(s))
        z.writestr(entry("archive/version"), "3\n")
        z.writestr(entry("archive/byteorder"), "little")
    # A hostile pickle (what pickle.dumps writes for a call to os.system("true")), so the fuzzer starts
    # next to the refusal paths. Written by hand: pickling the real call would need os.system itself.
    with open(os.path.join(OUT, "os_system.pkl"), "wb") as f:
        f.write(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")

if __name__ == "__main__":
    main()
