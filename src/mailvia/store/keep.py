"""`KEEP`: passed as `secret` to a store's `update_channel`, leave the stored secret as it is
(shared by the SQL and the memory store)."""

from __future__ import annotations

from enum import Enum


class Keep(Enum):
    KEEP = "keep"


KEEP = Keep.KEEP
