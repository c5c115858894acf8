"""The apps' own count of what they served: with APP_SERVED_FILE set, `served()` appends the
calling process's pid to that file, one short O_APPEND write per request or task, so lines
from racing workers never mix and a worker recycled right after leaves its line behind."""

import os

SERVED = os.environ.get("APP_SERVED_FILE")


def served() -> None:
    if SERVED:
        fd = os.open(SERVED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
