"""Long work in a log file (stderr not a terminal) says how far it got while it runs, not only at the end."""

import itertools

from curator import _progress


def test_a_log_gets_a_line_every_interval_and_one_at_the_end(monkeypatch, capsys):
    clock = itertools.count(0.0, 25.0)  # every reading of the clock is 25 s later
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setenv("CURATOR_PROGRESS", "1")
    got = list(_progress.progress(range(10), total=10, desc="verifying pairs"))
    assert got == list(range(10))
    lines = capsys.readouterr().err.strip().splitlines()
    # 60 s between lines at 25 s an item: a line after items 3, 5, 8 (75, 150, 225 s ...), then the end line
    assert len(lines) >= 3
    assert all(line.startswith("verifying pairs: ") for line in lines)
    assert " of 10 after " in lines[0]
    assert lines[-1].startswith("verifying pairs: 10 done in ")


def test_short_work_and_silenced_progress_leave_the_log_empty(monkeypatch, capsys):
    monkeypatch.setenv("CURATOR_PROGRESS", "1")
    list(_progress.progress(range(3), total=3, desc="quick"))
    assert capsys.readouterr().err == ""
    clock = itertools.count(0.0, 100.0)
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setenv("CURATOR_PROGRESS", "0")
    list(_progress.progress(range(3), total=3, desc="silenced"))
    assert capsys.readouterr().err == ""
