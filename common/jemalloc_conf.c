/* jemalloc_conf.c - the settings jemalloc reads before main, for the programs linked with it
 * (pgfanout, and bench/kafka_floor so its floor is measured with the same allocator).
 * MALLOC_CONF in the environment still overrides them. */

/* One arena: records are allocated on the main thread and freed on librdkafka's, and an arena
 * per thread held twice the memory for no measured gain.  Freed pages go back after a second
 * (muzzy pages at once): peak RSS 27-29 MB to Kafka against 43-54 MB with jemalloc's defaults,
 * while a snapshot chunk's memory is still reused for the next chunk. */
const char *malloc_conf = "narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0";
