"""Benchmark of versioned labeled sets: 1,000,000 labels, ten versions each relabeling 1%.

Measures, on SQLite and PostgreSQL: time to create each version (agreed
labels -> delta -> checksum -> rows), to read a version back in full, to diff
two versions, to verify one, and the storage taken by the version tables.
Samples and annotations are bulk-inserted directly (no image decoding); the
relabeling soft-deletes the old annotation and adds a new one, as a pull of a
changed Label Studio answer does.

    nice -n 10 .venv/bin/python benchmarks/versions/bench_versions.py --backend sqlite \
        --out benchmarks/versions/results.jsonl

Each step appends one JSON line to --out, so a stopped run keeps its figures.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

#: A role that may create databases; `make test` (tests/services.sh) creates curator_test.
PG_BASE = os.environ.get("CURATOR_TEST_PG_URL", "postgresql+psycopg://curator:curator@127.0.0.1/postgres")
PG_DB = "curator_bench_versions"
CLASSES = [str(i) for i in range(10)]


RUN = {"run": None}


def log(out: Path, backend: str, step: str, **fields) -> None:
    row = {"run": RUN["run"], "backend": backend, "step": step, "load1": round(os.getloadavg()[0], 2), **fields}
    with open(out, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def server_cpu() -> float:
    """CPU seconds used so far by the PostgreSQL backends serving the benchmark database
    (0 on SQLite, which runs inside this process and is counted by process_time)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and PG_DB.encode() in (proc / "cmdline").read_bytes():
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return total


def setup_database(backend: str, workdir: Path) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if backend == "sqlite":
        path = workdir / "bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return f"sqlite:///{path}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{PG_DB}"'))
    admin.dispose()
    return make_url(PG_BASE).set(database=PG_DB).render_as_string(hide_password=False)


def drop_database(backend: str) -> None:
    if backend != "postgresql":
        return
    from sqlalchemy import create_engine, text

    from curator.store.session import dispose_all

    dispose_all()
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)'))
    admin.dispose()


def bulk_insert(url: str, table: str, columns: list[str], rows) -> None:
    """COPY on PostgreSQL, executemany on SQLite, in one transaction."""
    from curator.store.session import get_engine

    engine = get_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            raw = conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", list(rows))


def version_storage(url: str) -> int:
    """Bytes of the version tables (data + indexes)."""
    from sqlalchemy import text

    from curator.store.session import get_engine

    engine = get_engine(url)
    tables = ("label_versions", "label_version_blobs", "label_version_seals")
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(sum(conn.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar() for t in tables))
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # dbstat reads the file, not the WAL
        names = ", ".join(f"'{t}'" for t in tables)
        # dbstat: every page of these tables and of their indexes (sqlite_autoindex_*).
        return int(conn.execute(text(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
            f"(SELECT name FROM sqlite_master WHERE tbl_name IN ({names}))"
        )).scalar())


def database_size(url: str) -> int:
    from sqlalchemy import text

    from curator.store.session import get_engine

    engine = get_engine(url)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.execute(text("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")).scalar())


def run(backend: str, n: int, versions: int, frac: float, out: Path, workdir: Path, seed: int) -> None:
    from sqlalchemy import text

    from curator import versions as V
    from curator.settings import Settings
    from curator.store.session import get_engine

    rng = np.random.default_rng(seed)
    url = setup_database(backend, workdir)
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    settings = Settings(workspace=workdir / "ws", db_url=url)
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO datasets (id, name, classes, created_at) VALUES (1, 'bench', :c, :t)"),
                     {"c": json.dumps(CLASSES), "t": "2026-01-01 00:00:00"})

    t = time.perf_counter()
    now = "2026-01-01 00:00:00"
    bulk_insert(url, "samples", ["id", "dataset_id", "uri", "sha256", "width", "height", "channels", "split", "created_at"],
                ((i, 1, f"bench://{i:07d}.png", hashlib.sha256(i.to_bytes(8, "little")).hexdigest(), 28, 28, 1, "train", now)
                 for i in range(1, n + 1)))
    labels = rng.integers(0, 10, size=n)
    bulk_insert(url, "annotations", ["id", "sample_id", "tool", "external_id", "label", "skipped", "deleted", "created_at"],
                ((i, i, "bench", f"b{i}", CLASSES[labels[i - 1]], False, False, now) for i in range(1, n + 1)))
    if backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    log(out, backend, "insert", samples=n, annotations=n, seconds=round(time.perf_counter() - t, 2),
        db_bytes=database_size(url))

    next_ann = n + 1
    base_storage = None
    for k in range(versions):
        if k:
            # relabel frac of the samples: soft-delete the live answer, add a different one
            chosen = np.sort(rng.choice(n, size=int(n * frac), replace=False) + 1)
            new = (labels[chosen - 1] + rng.integers(1, 10, size=len(chosen))) % 10
            labels[chosen - 1] = new
            t = time.perf_counter()
            with engine.begin() as conn:
                ids = chosen.tolist()
                for start in range(0, len(ids), 5000):
                    conn.execute(text(
                        f"UPDATE annotations SET deleted = true WHERE deleted = false AND sample_id IN "
                        f"({', '.join(map(str, ids[start:start + 5000]))})"))
            bulk_insert(url, "annotations", ["id", "sample_id", "tool", "external_id", "label", "skipped", "deleted", "created_at"],
                        ((next_ann + j, int(sid), "bench", f"b{next_ann + j}", CLASSES[int(lab)], False, False, now)
                         for j, (sid, lab) in enumerate(zip(chosen, new))))
            next_ann += len(chosen)
            relabel_s = round(time.perf_counter() - t, 2)
        else:
            relabel_s = 0.0
        t, cpu, srv = time.perf_counter(), time.process_time(), server_cpu()
        info = V.create_version(f"v{k}", dataset="bench", message=f"step {k}", settings=settings)
        create_s, create_cpu = round(time.perf_counter() - t, 2), round(time.process_time() - cpu, 2)
        create_srv = round(server_cpu() - srv, 2)
        storage = version_storage(url)
        base_storage = base_storage or storage
        log(out, backend, "create", version=info.name, seconds=create_s, cpu_seconds=create_cpu, server_cpu_seconds=create_srv, relabel_seconds=relabel_s,
            size=info.size, changes=info.changes, snapshot=info.snapshot, chain_rows=info.chain_rows,
            version_bytes=storage, ratio_to_first=round(storage / base_storage, 3))

    last = f"v{versions - 1}"
    for name in (last, "v0"):
        t, cpu, srv = time.perf_counter(), time.process_time(), server_cpu()
        got = V.read_version(name, dataset="bench", settings=settings)
        log(out, backend, "read", version=name, seconds=round(time.perf_counter() - t, 2),
            cpu_seconds=round(time.process_time() - cpu, 2), server_cpu_seconds=round(server_cpu() - srv, 2),
            size=len(got))
    expected = {i + 1: CLASSES[lab] for i, lab in enumerate(labels.tolist())}
    latest = V.read_version(last, dataset="bench", settings=settings).as_dict()
    assert latest == expected, "the last version does not hold the labels written"
    for a, b in ((f"v{versions - 2}", last), ("v0", last)):
        t, cpu, srv = time.perf_counter(), time.process_time(), server_cpu()
        d = V.diff_versions(a, b, dataset="bench", settings=settings)
        log(out, backend, "diff", a=a, b=b, seconds=round(time.perf_counter() - t, 2),
            cpu_seconds=round(time.process_time() - cpu, 2), server_cpu_seconds=round(server_cpu() - srv, 2),
            relabeled=len(d.relabeled), added=len(d.added), removed=len(d.removed))
    t = time.perf_counter()
    report = V.verify_version(last, dataset="bench", settings=settings)
    log(out, backend, "verify", version=last, seconds=round(time.perf_counter() - t, 2), ok=report.ok)
    log(out, backend, "storage", first_version_bytes=base_storage, all_versions_bytes=version_storage(url),
        ratio=round(version_storage(url) / base_storage, 3), db_bytes=database_size(url))
    drop_database(backend)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--versions", type=int, default=10)
    p.add_argument("--frac", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/versions/results.jsonl"))
    p.add_argument("--workdir", type=Path, default=Path("/tmp/curator-bench-versions"))
    p.add_argument("--run", help="A tag written on every result line (e.g. the commit measured).")
    args = p.parse_args()
    RUN["run"] = args.run
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CURATOR_PROGRESS", "0")
    run(args.backend, args.n, args.versions, args.frac, args.out, args.workdir, args.seed)


if __name__ == "__main__":
    main()
