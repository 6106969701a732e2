"""Build step of the wheel: copy the checkout's data folders into ``curator/_data``.

Everything else is declared in pyproject.toml. The folders stay where they are (``db/``,
``datasets/mnist1989``, ``plugins/fiftyone``: the one source of truth, see
``curator/_resources.py``); a built wheel carries a copy, an editable install reads them
in place.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _resources():
    spec = importlib.util.spec_from_file_location("_curator_resources", HERE / "curator" / "_resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithData(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders
            return
        res = _resources()
        for name, source in res.BUNDLED.items():
            src = HERE / source
            if not src.is_dir():
                raise SystemExit(f"setup.py: {src} is missing; build from a full checkout or sdist")
            dst = Path(self.build_lib) / "curator" / res.DATA / name
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*res.IGNORE))


setup(cmdclass={"build_py": BuildWithData})
