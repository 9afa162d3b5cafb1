#!/usr/bin/env python3
"""One consumer-group member in its own process, so a test can SIGKILL it (a member that dies
without LeaveGroup) and run members of different client libraries side by side.

    group_member.py --client confluent|kafka-python|aiokafka --bootstrap H:P --group G
                    --topic T [--session-timeout-ms N] [--hold] [--lifetime-s S] ...

Reports on stdout, one JSON object a line, flushed:
    {"ev": "ready"}                          consumer created and subscribed
    {"ev": "assigned", "p": [0, 1]}          whenever its assignment changes (sorted), as seen
                                             between polls
    {"ev": "revoked", "p": [0, 1]}           every revocation callback (each rebalance the
                                             member takes part in, even if too quick for
                                             "assigned" to show a change)
    {"ev": "rec", "p": 0, "o": 5}            every record received
    {"ev": "committed", "offsets": {"0": 5}} after a `commit` command: what OffsetFetch returns
    {"ev": "error", "msg": "..."}            consumer errors (the test decides what they mean)
    {"ev": "closed"}                         after a `close` command, before exiting 0
Commands on stdin, one a line:
    go                          resume partitions held by --hold (see below)
    commit {"0": 5, "1": 7}     synchronous commit of exactly these offsets (partition -> next
                                offset to read), then report committed() for every partition
                                of the topic
    close                       leave the group (LeaveGroup) and exit
--hold pauses every assigned partition as soon as it is assigned, before anything is fetched,
until `go`: a test can wait for a stable group before any record is delivered.
The process exits by itself after --lifetime-s (a bound, so no member outlives a failed test).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def stdin_commands() -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def read():
        for line in sys.stdin:
            q.put(line.strip())
        q.put("close")  # parent went away

    threading.Thread(target=read, daemon=True).start()
    return q


def python_client_config(args) -> dict:
    """The settings kafka-python's and aiokafka's consumers share (same names)."""
    return dict(
        bootstrap_servers=args.bootstrap, group_id=args.group,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        max_poll_interval_ms=max(args.session_timeout_ms, 10000),
        auto_offset_reset=args.auto_offset_reset, enable_auto_commit=False,
        metadata_max_age_ms=1000)


def rebalance_listener(base, member, consumer):
    """kafka-python's and aiokafka's listener (same interface): reports revocations and pauses
    what is assigned while the member is held."""

    class Listener(base):
        def on_partitions_revoked(self, revoked):
            emit(ev="revoked", p=sorted(tp.partition for tp in revoked))

        def on_partitions_assigned(self, assigned):
            if member.held and assigned:
                consumer.pause(*assigned)

    return Listener()


def serve(client, commands: queue.Queue, lifetime_s: float):
    """The loop every client shares: poll, report records and assignment changes, obey
    commands, until `close` or the lifetime is over. `client` is one of the adapters below:
    poll() -> [(partition, offset)], assignment() -> sorted partitions, resume() (held
    partitions), commit({partition: offset}) -> {"partition": committed offset}, close()."""
    emit(ev="ready")
    last = None
    deadline = time.monotonic() + lifetime_s
    while time.monotonic() < deadline:
        try:
            records = client.poll()
        except Exception as e:  # e.g. a group error answer: reported, then poll again
            emit(ev="error", msg=f"poll: {type(e).__name__}: {e}")
            time.sleep(0.1)
            records = []
        for p, o in records:
            emit(ev="rec", p=p, o=o)
        now = client.assignment()
        if now != last:
            last = now
            emit(ev="assigned", p=now)
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            continue
        if cmd == "go":
            client.held = False
            client.resume()
        elif cmd.startswith("commit "):
            offsets = {int(p): o for p, o in json.loads(cmd[len("commit "):]).items()}
            emit(ev="committed", offsets=client.commit(offsets))
        elif cmd == "close":
            client.close()
            emit(ev="closed")
            return
    emit(ev="error", msg="lifetime over")
    client.close()


class ConfluentClient:
    def __init__(self, args):
        import confluent_kafka
        from confluent_kafka import TopicPartition

        self.args = args
        self.TopicPartition = TopicPartition
        conf = {
            "bootstrap.servers": args.bootstrap, "group.id": args.group,
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": args.heartbeat_interval_ms,
            "max.poll.interval.ms": max(args.session_timeout_ms, 10000),
            "auto.offset.reset": args.auto_offset_reset,
            "enable.auto.commit": False, "enable.partition.eof": False,
            "topic.metadata.refresh.interval.ms": 1000,
            "log_level": 3,
        }
        if args.assignor:
            conf["partition.assignment.strategy"] = args.assignor
        if args.instance_id:
            conf["group.instance.id"] = args.instance_id
        self.consumer = confluent_kafka.Consumer(conf)
        self.held = args.hold

        def on_assign(c, partitions):
            if args.assignor == "cooperative-sticky":
                # KIP-429: partitions are added to the current assignment.
                c.incremental_assign(partitions)
            else:
                c.assign(partitions)
            if self.held and partitions:
                c.pause(partitions)

        def on_revoke(_c, partitions):
            # The library unassigns (eager) or incrementally unassigns (cooperative) after this.
            emit(ev="revoked", p=sorted(tp.partition for tp in partitions))

        self.consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)

    def poll(self):
        out = []
        for msg in self.consumer.consume(num_messages=1000, timeout=0.05):
            if msg.error() is not None:
                emit(ev="error", msg=str(msg.error()))
            else:
                out.append((msg.partition(), msg.offset()))
        return out

    def assignment(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    def resume(self):
        self.consumer.resume(self.consumer.assignment())

    def commit(self, offsets):
        tp = self.TopicPartition
        self.consumer.commit(offsets=[tp(self.args.topic, p, o) for p, o in offsets.items()],
                             asynchronous=False)
        got = self.consumer.committed([tp(self.args.topic, p)
                                       for p in range(self.args.partitions)], timeout=10)
        return {str(t.partition): t.offset for t in got}

    def close(self):
        self.consumer.close()


class KafkaPythonClient:
    def __init__(self, args):
        from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
        from kafka.structs import OffsetAndMetadata

        self.args = args
        self.TopicPartition = TopicPartition
        self.OffsetAndMetadata = OffsetAndMetadata
        extra = {}
        if args.api_version:
            extra["api_version"] = tuple(int(x) for x in args.api_version.split("."))
        if args.assignor == "roundrobin":
            extra["partition_assignment_strategy"] = (RoundRobinPartitionAssignor,)
        elif args.assignor == "range":
            extra["partition_assignment_strategy"] = (RangePartitionAssignor,)
        if args.instance_id:
            extra["group_instance_id"] = args.instance_id
        consumer = KafkaConsumer(
            request_timeout_ms=max(args.session_timeout_ms + 5000, 30000),
            **python_client_config(args), **extra)
        self.consumer = consumer
        self.held = args.hold
        consumer.subscribe([args.topic],
                           listener=rebalance_listener(ConsumerRebalanceListener, self, consumer))
        # kafka-python 3.0.12 can strand a member for good (no heartbeats, no assignment,
        # never rejoins) when it joins before it knows the topic's partitions: the leader
        # assigns nothing, the metadata that arrives next makes need_rejoin() true only through
        # the leader's assignment snapshot, the leader's _perform_assignment updates that
        # snapshot mid-rebalance, and if poll()'s timeout ends before the SyncGroup answer the
        # finished join is never collected (join_group_async sees need_rejoin() false and
        # returns). The same happens against Kafka with group.initial.rebalance.delay.ms=0;
        # Kafka's default delay (3 s) usually hides it. Learning the topic's partitions before
        # the first poll (what the delay gives in practice) removes the trigger. Bounded: the
        # member's lifetime.
        known_by = time.monotonic() + args.lifetime_s
        while not consumer.partitions_for_topic(args.topic):
            if time.monotonic() > known_by:
                raise RuntimeError(f"no partitions known for {args.topic}")
            time.sleep(0.05)

    def poll(self):
        polled = self.consumer.poll(timeout_ms=50, max_records=1000)
        return [(tp.partition, m.offset) for tp, msgs in polled.items() for m in msgs]

    def assignment(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    def resume(self):
        self.consumer.resume(*self.consumer.assignment())

    def commit(self, offsets):
        tp = self.TopicPartition
        self.consumer.commit({tp(self.args.topic, p): self.OffsetAndMetadata(o, "", -1)
                              for p, o in offsets.items()})
        got = {str(p): self.consumer.committed(tp(self.args.topic, p))
               for p in range(self.args.partitions)}
        return {p: (-1001 if o is None else o) for p, o in got.items()}

    def close(self):
        self.consumer.close()


class AiokafkaClient:
    """aiokafka on its own event loop in a background thread (so its heartbeats run all the
    time); every consumer call is made on that loop and waited for, bounded."""

    CALL_TIMEOUT_S = 60

    def __init__(self, args):
        import asyncio

        self.args = args
        self.asyncio = asyncio
        self.held = args.hold
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.consumer = self.call(self._start())

    def call(self, coroutine):
        future = self.asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=self.CALL_TIMEOUT_S)

    async def _start(self):
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        args = self.args
        extra = {}
        if args.api_version:
            extra["api_version"] = args.api_version
        consumer = AIOKafkaConsumer(**python_client_config(args), **extra)
        consumer.subscribe([args.topic],
                           listener=rebalance_listener(ConsumerRebalanceListener, self, consumer))
        await consumer.start()
        return consumer

    async def _poll(self):
        batch = await self.consumer.getmany(timeout_ms=50, max_records=1000)
        return [(tp.partition, m.offset) for tp, msgs in batch.items() for m in msgs]

    async def _assignment(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    async def _resume(self):
        self.consumer.resume(*self.consumer.assignment())

    async def _commit(self, offsets):
        from aiokafka.structs import OffsetAndMetadata, TopicPartition

        await self.consumer.commit({TopicPartition(self.args.topic, p): OffsetAndMetadata(o, "")
                                    for p, o in offsets.items()})
        got = {}
        for p in range(self.args.partitions):
            o = await self.consumer.committed(TopicPartition(self.args.topic, p))
            got[str(p)] = -1001 if o is None else o
        return got

    def poll(self):
        return self.call(self._poll())

    def assignment(self):
        return self.call(self._assignment())

    def resume(self):
        self.call(self._resume())

    def commit(self, offsets):
        return self.call(self._commit(offsets))

    def close(self):
        try:
            self.call(self.consumer.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


CLIENTS = {"confluent": ConfluentClient, "kafka-python": KafkaPythonClient,
           "aiokafka": AiokafkaClient}


def main():
    if os.environ.get("KARST_MEMBER_DEBUG"):
        # The client's own debug log (kafka-python, aiokafka) on stderr, with wall-clock times
        # to line up with the node's RUST_LOG trace.
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s.%(msecs)03d %(threadName)s %(name)s %(message)s",
                            datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True, choices=sorted(CLIENTS))
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--session-timeout-ms", type=int, default=3000)
    ap.add_argument("--heartbeat-interval-ms", type=int, default=300)
    ap.add_argument("--auto-offset-reset", default="earliest")
    ap.add_argument("--assignor", default="")
    ap.add_argument("--instance-id", default="")
    ap.add_argument("--api-version", default="", help="kafka-python/aiokafka only")
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--lifetime-s", type=float, default=120)
    args = ap.parse_args()
    commands = stdin_commands()
    try:
        serve(CLIENTS[args.client](args), commands, args.lifetime_s)
    except Exception as e:  # reported to the test, which fails with it
        emit(ev="error", msg=f"{type(e).__name__}: {e}")
        raise


if __name__ == "__main__":
    main()
