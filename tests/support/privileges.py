"""Running a process as root without the capabilities that make it ignore mode bits."""

from __future__ import annotations

import os
import shutil


def without_dac_override() -> tuple[str, ...]:
    """The command prefix that runs a program without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH when this process is root, so the mode bits of files apply to it as
    to any user; none when it is not root (they apply already)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE"
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")
