"""A simulated day through a real gateway process, every protocol at once, then a Bronze audit.

HL7 over MLLP (a port per source), wearables over Kafka (captured), batch files into the drop
folder; then every message not planted as malformed must be in a Bronze segment, every file stored
whole and moved to .done, and bronze.raw.v1 must hold exactly one envelope per accepted message
and file record. bench/gateway_reference_day.py runs the same at 45,000 patients.
"""

from __future__ import annotations

import csv
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carelake.bronze.store import open_store
from carelake.config import Settings
from carelake.stream.admin import create_topics
from carelake.stream.selftest import count
from carelake.topics import Catalog
from carelake_ingest_gateway.launch import GatewayProcess
from carelake_ingest_gateway.replay import archived_digests
from carelake_simulator import store as feed_store
from carelake_simulator.deliver import deliver_day
from carelake_simulator.simulate import SimConfig
from carelake_simulator.simulate import run as simulate_run

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_a_day_through_every_protocol_is_complete_in_bronze(stack: Settings, catalog: Catalog,
                                                            tmp_path: Path) -> None:
    create_topics(catalog, stack.bootstrap)
    day = tmp_path / "day"
    simulate_run(SimConfig(patients=300, seed=4, device_share=0.05), day)
    # Two MLLP worker processes share the ports (SO_REUSEPORT), as on a host with cores to spare.
    gateway = GatewayProcess(catalog.prefix, tmp_path / "gateway",
                             extra_env={"CARELAKE_DROP_POLL_S": "0.2", "CARELAKE_MLLP_WORKERS": "2"})
    gateway.start()
    try:
        delivery = deliver_day(day, mllp_ports=gateway.ports, bootstrap=stack.bootstrap, catalog=catalog,
                               drop_folder=gateway.drop)
        assert not delivery.errors and delivery.failed == 0, (delivery.errors, delivery.outcomes())
        assert {"mllp:ehr", "mllp:lab", "kafka:wearables", "drop:files"} <= set(delivery.lanes)

        with open(day / "_truth" / "records.csv", newline="") as fh:
            truth = list(csv.DictReader(fh))
        malformed = {(t["source"], t["record_id"]) for t in truth if "malformed" in t["defects"]}
        expected: dict[str, set[str]] = {}
        for source in ("ehr", "lab", "public_health", "scheduling", "billing", "wearables"):
            for r in feed_store.iter_records(day, source):
                if (source, r.message_id) not in malformed:
                    expected.setdefault(source, set()).add(hashlib.sha256(r.payload).hexdigest())
        files = list(feed_store.iter_files(day))
        file_records = sum(1 for t in truth if t["file"])
        acked = sum(st.sent for name, st in delivery.lanes.items() if name.startswith("mllp:"))
        produced = delivery.lanes["kafka:wearables"].sent
        bronze = open_store(Settings(bronze_dir=gateway.bronze))
        today = datetime.now(UTC).date()
        raw, dlq = catalog.physical("bronze.raw.v1"), catalog.physical("dlq.ingest-gateway.v1")

        deadline = time.monotonic() + 180
        while True:
            missing = {s: len(d - archived_digests(bronze, s, today)) for s, d in expected.items()}
            want = acked + produced - count(stack.bootstrap, dlq) + file_records
            on_topic = count(stack.bootstrap, raw)
            if (not any(missing.values()) and on_topic >= want) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not any(missing.values()), missing
        assert on_topic == want
        # planted malformed HL7 is answered AR and never acknowledged; malformed JSON is in the DLQ
        assert sum(1 for s, _ in malformed if s == "wearables") == count(stack.bootstrap, dlq)
        stored = {info.sha256 for s in {f.source for f in files}
                  for info in bronze.list(f"{s}/{today:%Y/%m/%d}/files/")}
        assert {hashlib.sha256(f.payload).hexdigest() for f in files} <= stored
        done = {p.name for p in gateway.drop.glob("*/.done/*/*")}
        assert {f.name for f in files} <= done
        assert gateway.metric("carelake_drop_files_total", outcome="taken") == len(files)
        acks = [gateway.metric("carelake_mllp_acks_total", code="AA", port_offset=i) for i in (1, 2)]
        assert sum(acks) == acked and all(acks), acks  # both workers answered senders
    finally:
        assert gateway.stop() == 0, gateway.tail()
