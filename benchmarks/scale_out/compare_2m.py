"""The streamed self-join on the first ``n`` rows of the 10M pool (``STREAM_MIN_N`` lowered so the
streamed tier runs), with this checkout's ``curator.index`` or an older copy: CPU seconds per phase,
so that old and new code compare on a loaded machine.

    git show <rev>:curator/index.py > /tmp/index_old.py
    for w in old new old new; do PYTHONPATH=. nice -n 10 python benchmarks/scale_out/compare_2m.py $w; done >> benchmarks/scale_out/results.jsonl

Prints one JSON line: wall and CPU seconds (total and by phase), the pairs and a digest of them.
"""

import importlib.util
import json
import os
import resource
import sys
import time

import numpy as np


def main(which: str, n: str = "2000000", old_path: str = "/tmp/index_old.py"):
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if which == "old":
        spec = importlib.util.spec_from_file_location("index_old", old_path)
        index = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(index)
    else:
        from curator import index
    n = int(n)
    index.STREAM_MIN_N = 100_000
    data = os.environ.get("SCALE_OUT_DATA", "/tmp/curator_scale_out")
    x = np.load(f"{data}/10000000/x.npy", mmap_mode="r")[:n]

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime, r.ru_stime

    load0 = open("/proc/loadavg").read().split()[:3]
    t0, (c0, s0) = time.perf_counter(), cpu()
    i, j, _, info = index.self_pairs(x, 0.99)
    c1, s1 = cpu()
    key = (i * n + j).astype(np.int64)
    print(json.dumps({"stage": "self_join_2m_code", "code": which, "n": n,
                      "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(c1 - c0, 1),
                      "sys_s": round(s1 - s0, 1), "pairs": int(len(i)),
                      "pairs_digest": int(np.bitwise_xor.reduce(key * 2654435761 % (1 << 61))),
                      "info": info, "loadavg_before": load0,
                      "loadavg_after": open("/proc/loadavg").read().split()[:3]}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
