"""Runs a tiermark script under a Python that has the Debian packages it needs.

On this machine kind `python3` on PATH may be a pyenv interpreter without matplotlib, numpy or
scipy, while Debian's python3-matplotlib, python3-numpy and python3-scipy serve /usr/bin/python3.
A script calls require("matplotlib", ...) before importing them: when a module is missing and
/usr/bin/python3 is another interpreter, the script is re-executed there with the same arguments
(once: TIERMARK_REEXEC guards against loops); when it is missing there too, one line says what to
install and the script exits 2.
"""

import importlib.util
import os
import sys

DEBIAN_PYTHON = "/usr/bin/python3"
PACKAGES = {"matplotlib": "python3-matplotlib", "numpy": "python3-numpy", "scipy": "python3-scipy"}


def require(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    here = os.path.realpath(sys.executable) if sys.executable else ""
    if (os.environ.get("TIERMARK_REEXEC") != "1" and os.path.exists(DEBIAN_PYTHON)
            and os.path.realpath(DEBIAN_PYTHON) != here):
        os.environ["TIERMARK_REEXEC"] = "1"
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, os.path.abspath(sys.argv[0]), *sys.argv[1:]])
    packages = " ".join(PACKAGES.get(m, m) for m in missing)
    script = os.path.basename(sys.argv[0]) or "tiermark"
    print(f"{script}: needs the Python module(s) {', '.join(missing)}: "
          f"apt-get install {packages} (or tools/install-deps.sh)", file=sys.stderr)
    sys.exit(2)
