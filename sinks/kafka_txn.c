/* kafka_txn.c - see kafka_txn.h. */
#include "sinks/kafka_txn.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct kafka_txn_worker {
    rd_kafka_t *rk;
    int wake_fd;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    enum kafka_txn_call call; /* asked, not yet taken by the thread; 0 when none */
    int timeout_ms;
    int running;              /* a call is under way (asked or in the thread) */
    int finished;             /* a call ended and its outcome was not taken */
    rd_kafka_error_t *err;
    int stop;
};

/* Milliseconds of a monotonic clock. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Makes one call, again while librdkafka says retrying may work and time is left. */
static rd_kafka_error_t *make_call(rd_kafka_t *rk, enum kafka_txn_call call, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - now_ms());
        if (left < 1)
            left = 1;
        rd_kafka_error_t *e = call == KAFKA_TXN_COMMIT ? rd_kafka_commit_transaction(rk, left)
                                                       : rd_kafka_abort_transaction(rk, left);
        if (e == NULL || !rd_kafka_error_is_retriable(e) || now_ms() >= deadline)
            return e;
        rd_kafka_error_destroy(e);
        struct timespec pause = {0, 100000000};
        nanosleep(&pause, NULL);
    }
}

/* The thread: waits for a call, makes it, reports through the pipe. */
static void *run(void *arg)
{
    struct kafka_txn_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && w->call == 0)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->call == 0)
            break;
        enum kafka_txn_call call = w->call;
        int timeout_ms = w->timeout_ms;
        w->call = 0;
        pthread_mutex_unlock(&w->mu);
        rd_kafka_error_t *e = make_call(w->rk, call, timeout_ms);
        pthread_mutex_lock(&w->mu);
        w->err = e;
        w->running = 0;
        w->finished = 1;
        pthread_cond_broadcast(&w->cv);
        ssize_t rc;
        do
            rc = write(w->wake_fd, "t", 1);
        while (rc < 0 && errno == EINTR);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Starts the worker; see kafka_txn.h. */
struct kafka_txn_worker *kafka_txn_worker_start(rd_kafka_t *rk, int wake_fd)
{
    struct kafka_txn_worker *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->rk = rk;
    w->wake_fd = wake_fd;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return NULL;
    }
    return w;
}

/* Asks for a call; see kafka_txn.h. */
int kafka_txn_worker_ask(struct kafka_txn_worker *w, enum kafka_txn_call call, int timeout_ms)
{
    pthread_mutex_lock(&w->mu);
    int rc = -1;
    if (!w->running && !w->finished) {
        w->call = call;
        w->timeout_ms = timeout_ms;
        w->running = 1;
        pthread_cond_broadcast(&w->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* True while a call is under way. */
int kafka_txn_worker_busy(struct kafka_txn_worker *w)
{
    pthread_mutex_lock(&w->mu);
    int busy = w->running;
    pthread_mutex_unlock(&w->mu);
    return busy;
}

/* Takes a finished call's outcome; see kafka_txn.h. */
int kafka_txn_worker_take(struct kafka_txn_worker *w, rd_kafka_error_t **err)
{
    pthread_mutex_lock(&w->mu);
    int done = w->finished;
    if (done) {
        *err = w->err;
        w->err = NULL;
        w->finished = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return done;
}

/* Waits for the call under way; see kafka_txn.h. */
int kafka_txn_worker_wait(struct kafka_txn_worker *w, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->mu);
    while (w->running && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
        ;
    int idle = !w->running;
    pthread_mutex_unlock(&w->mu);
    return idle;
}

/* Stops the worker; see kafka_txn.h. */
void kafka_txn_worker_stop(struct kafka_txn_worker *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    if (w->err)
        rd_kafka_error_destroy(w->err);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
