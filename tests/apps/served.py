"""The apps' own count of what they served: with APP_SERVED_FILE set, `served()` appends the
calling process's pid and what it served (a request by default) to that file, one short
O_APPEND write each, so lines from racing workers never mix and a worker recycled right after
leaves its line behind."""

import os

SERVED = os.environ.get("APP_SERVED_FILE")


def served(what: str = "request") -> None:
    if SERVED:
        fd = os.open(SERVED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()} {what}\n".encode())
        finally:
            os.close(fd)
