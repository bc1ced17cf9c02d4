"""A long Subject given to the API (`subject` of POST /v1/messages) is stored so that it reads
back as given: the composed bytes carry no empty encoded word and decode to the same text, for
subjects mixing Japanese, accented Latin and blanks of many lengths (the fold's places)."""

from __future__ import annotations

import email
import time
from email import policy
from pathlib import Path

from support.api import Api, message
from support.world import World

PARTS = ("日本語の件名 ", "Grüße  aus Köln ", "naïve café ", "テスト", "word ")


async def test_the_apis_subject_reads_back_as_given(tmp_path: Path) -> None:
    api = Api(World(tmp_path / "data"))
    try:
        channel = api.jane_channel()
        jane = api.client("jane")
        subjects = {}
        for length in range(60, 201, 7):
            for shift in range(len(PARTS)):
                text = "".join(PARTS[shift:] + PARTS[:shift]) * 20
                subject = text[:length].strip()
                posted = await jane.post("/v1/messages", json=message(subject=subject))
                assert posted.status_code == 202, posted.text
                subjects[posted.json()["id"]] = subject
        now = time.time()
        claims = api.world.store.claim(
            channel_id=channel.id, now=now, limit=500, lease_until=now + 60, worker="w"
        )
    finally:
        await api.aclose()
    assert len(claims) == len(subjects) > 100
    for claim in claims:
        head = claim.content.partition(b"\r\n\r\n")[0]
        assert b"=?utf-8?q??=" not in head.lower() and b"=?utf-8?b??=" not in head.lower()
        read = email.message_from_bytes(claim.content, policy=policy.default)["Subject"]
        assert read == subjects[claim.message_id], head
