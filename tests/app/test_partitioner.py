"""The ingest producer's cached partitioner gives every key the partition Kafka's default
partitioner gives it (murmur2 of the key bytes, positive, modulo the partition count)."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from app.ingest import CachedPartitioner
from records import EXCHANGES, market_key

# Kafka's own murmur2 test vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2),
# as signed 32-bit ints: an implementation we did not write.
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def kafka_partition(key: bytes, count: int) -> int:
    """Kafka's DefaultPartitioner/BuiltInPartitioner: toPositive(murmur2(key)) % count."""
    return (KAFKA_MURMUR2[key] & 0x7FFFFFFF) % count


def test_kafka_test_vectors() -> None:
    partitioner = CachedPartitioner()
    for count in (1, 2, 3, 4, 7, 12, 100):
        partitions = list(range(count))
        for key in KAFKA_MURMUR2:
            assert partitioner(key, partitions, partitions) == kafka_partition(key, count), key


def test_same_partition_as_aiokafka_default_for_every_key() -> None:
    rng = random.Random(7)
    keys = [market_key(ex, f"{base}-{quote}") for ex in EXCHANGES
            for base in ("BTC", "ETH", "XRP", "LAMB", "NKN", "USDT")
            for quote in ("KRW", "USDT", "USD", "BTC")]
    keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))) for _ in range(500)]
    keys += [b"BTC", b"#rate", b""]
    partitioner = CachedPartitioner()
    for count in (1, 4, 12, 31):
        partitions = list(range(count))
        for _ in range(2):  # computed, then from the cache
            for key in keys:
                assert partitioner(key, partitions, partitions) == \
                    DefaultPartitioner.__call__(key, partitions, partitions), (key, count)
    assert len(partitioner.cache) == len(set(keys)) * 4


def test_a_changed_partition_count_is_not_served_from_the_cache() -> None:
    partitioner = CachedPartitioner()
    key = b"upbit:BTC-KRW"
    got = {count: partitioner(key, list(range(count)), list(range(count)))
           for count in (4, 5, 4, 12)}
    assert got == {count: DefaultPartitioner.__call__(key, list(range(count)),
                                                      list(range(count)))
                   for count in (4, 5, 12)}


def test_no_key_goes_to_an_available_partition() -> None:
    partitioner = CachedPartitioner()
    for _ in range(50):
        assert partitioner(None, [0, 1, 2, 3], [1, 3]) in (1, 3)
