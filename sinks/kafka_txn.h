/* kafka_txn.h - librdkafka's transaction calls off the event loop.
 *
 * rd_kafka_commit_transaction and rd_kafka_abort_transaction wait for the brokers (they flush
 * every record, then ask the coordinator), and librdkafka 2.0.2 has no asynchronous form.  A
 * thread of its own makes the one call asked of it and says it is done through the sink's
 * wake pipe, so the loop goes on serving deliveries, HTTP and the slot meanwhile. */
#ifndef PGFANOUT_KAFKA_TXN_H
#define PGFANOUT_KAFKA_TXN_H

#include <librdkafka/rdkafka.h>

struct kafka_txn_worker;

enum kafka_txn_call { KAFKA_TXN_COMMIT = 1, KAFKA_TXN_ABORT };

/* Starts the worker for producer rk; it writes a byte to wake_fd after each call.  Returns
 * it, or NULL when the thread cannot start. */
struct kafka_txn_worker *kafka_txn_worker_start(rd_kafka_t *rk, int wake_fd);

/* Asks for one call (commit or abort of the open transaction), which the worker retries
 * while librdkafka calls its error retriable, up to timeout_ms in all.  Returns 0, or -1
 * when a call is still under way. */
int kafka_txn_worker_ask(struct kafka_txn_worker *w, enum kafka_txn_call call, int timeout_ms);

/* True while a call is under way. */
int kafka_txn_worker_busy(struct kafka_txn_worker *w);

/* Takes the finished call's outcome: returns 1 with *err (NULL on success, else the caller's
 * to destroy) once it ended, 0 while it runs or when nothing was asked. */
int kafka_txn_worker_take(struct kafka_txn_worker *w, rd_kafka_error_t **err);

/* Waits up to timeout_ms for the call under way to end; returns 1 when none is under way. */
int kafka_txn_worker_wait(struct kafka_txn_worker *w, int timeout_ms);

/* Stops the thread (after the call under way, if any) and frees w; NULL is fine. */
void kafka_txn_worker_stop(struct kafka_txn_worker *w);

#endif
