"""The 1M self-join (in-memory partitioned tier) with this checkout's ``curator.index`` and with an older copy.

    git show <rev>:curator/index.py > /tmp/index_old.py
    for w in old new old new; do PYTHONPATH=. python benchmarks/scale_out/compare_1m.py $w; done >> benchmarks/scale_out/results.jsonl

Prints one JSON line: CPU and wall seconds, the pairs and a digest of them (equal digests: the same pairs).
"""

import importlib.util
import json
import resource
import sys
import time

import numpy as np


def main(which: str, old_path: str = "/tmp/index_old.py", pool: str = "/tmp/curator_scale_out/1000000/x.npy"):
    if which == "old":
        spec = importlib.util.spec_from_file_location("index_old", old_path)
        index = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(index)
    else:
        from curator import index
    x = np.asarray(np.load(pool, mmap_mode="r"))

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    load0 = open("/proc/loadavg").read().split()[:3]
    t0, c0 = time.perf_counter(), cpu()
    i, j, _, info = index.self_pairs(x, 0.99 - 1e-12)
    key = (i * len(x) + j).astype(np.int64)
    print(json.dumps({"stage": "self_join_1m_code", "code": which, "n": len(x),
                      "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu() - c0, 1),
                      "pairs": int(len(i)), "pairs_digest": int(np.bitwise_xor.reduce(key * 2654435761 % (1 << 61))),
                      "info": info, "loadavg_before": load0, "loadavg_after": open("/proc/loadavg").read().split()[:3]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
