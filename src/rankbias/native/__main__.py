"""``python -m rankbias.native``: build the native training step for this machine now (it is
otherwise built at first use) and say where it is, or why it cannot be used (exit status 0 either
way: the eager path trains without it)."""

from . import available, library_path, reason

if available():
    print(f"rankbias: native training step ready: {library_path()}")
else:
    print(f"rankbias: native training step unavailable ({reason()}); runs train on the eager path")
