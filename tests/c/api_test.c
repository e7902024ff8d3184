/*
 * Exercises the C ABI without sockets: version, result messages, NULL checks, _free(NULL),
 * outputs left alone on failure, the field codec, and an engine driven by hand through a
 * REGISTER/CONNECT/SEND/delivery/acknowledgement round. Prints "api: N passed, 0 failed"
 * and exits 0, or names the failed check and exits 1. argv[1] is the expected version.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cartero.h"

static int passed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "api_test.c:%d: check failed: %s\n", __LINE__, #cond); \
            exit(1);                                                         \
        }                                                                    \
        passed++;                                                            \
    } while (0)

static cartero_request_decoder *request(const char *bytes, size_t len) {
    cartero_request_decoder *d = NULL;
    CHECK(cartero_request_decoder_new(&d) == CARTERO_OK);
    CHECK(cartero_request_decoder_feed(d, (const uint8_t *)bytes, len) == CARTERO_OK);
    return d;
}

/* Handles one request from 10.0.0.1 and returns its reply's bytes as a string. */
static char *handle(cartero_engine *e, const char *bytes, size_t len) {
    static char reply[512];
    cartero_request_decoder *d = request(bytes, len);
    cartero_bytes *r = NULL;
    uint64_t hold = 0;
    CHECK(cartero_engine_handle_request(e, d, "10.0.0.1", &r, &hold) == CARTERO_OK);
    CHECK(cartero_bytes_len(r) < sizeof reply);
    memcpy(reply, cartero_bytes_data(r), cartero_bytes_len(r));
    reply[cartero_bytes_len(r)] = '\0';
    CHECK(cartero_engine_release(e, hold) == CARTERO_OK);
    cartero_bytes_free(r);
    cartero_request_decoder_free(d);
    return reply;
}

/* A literal's bytes, NULs included, without the terminating one C adds. */
#define HANDLE(e, literal) handle((e), (literal), sizeof(literal) - 1)

int main(int argc, char **argv) {
    /* Version: the defines, the function and Cargo.toml (passed in) agree. */
    char defines[64];
    snprintf(defines, sizeof defines, "%d.%d.%d", CARTERO_VERSION_MAJOR, CARTERO_VERSION_MINOR, CARTERO_VERSION_PATCH);
    CHECK(strcmp(defines, cartero_version()) == 0);
    CHECK(argc > 1 && strcmp(argv[1], cartero_version()) == 0);

    /* Results have messages; unknown numbers too. */
    CHECK(strcmp(cartero_result_message(CARTERO_OK), "ok") == 0);
    CHECK(strstr(cartero_result_message(CARTERO_NULL_ARGUMENT), "NULL") != NULL);
    CHECK(strcmp(cartero_result_message(9999), "unknown result code") == 0);

    /* NULL checks and _free(NULL). */
    CHECK(cartero_engine_new(NULL, NULL) == CARTERO_NULL_ARGUMENT);
    CHECK(cartero_field_decoder_feed(NULL, NULL, 0) == CARTERO_NULL_ARGUMENT);
    CHECK(cartero_client_new(NULL, 1, 0, NULL) == CARTERO_NULL_ARGUMENT);
    CHECK(cartero_bytes_len(NULL) == 0 && cartero_bytes_data(NULL) == NULL);
    cartero_engine_free(NULL);
    cartero_bytes_free(NULL);
    cartero_delivery_free(NULL);
    cartero_request_decoder_free(NULL);
    cartero_field_decoder_free(NULL);
    cartero_client_free(NULL);
    cartero_listener_free(NULL);
    cartero_push_free(NULL);

    /* The field codec: split, refuse, encode. */
    cartero_field_decoder *fd = NULL;
    CHECK(cartero_field_decoder_new(CARTERO_MAX_FIELD_LEN, &fd) == CARTERO_OK);
    CHECK(cartero_field_decoder_feed(fd, (const uint8_t *)"SEND\0an", 7) == CARTERO_OK);
    cartero_bytes *field = NULL;
    CHECK(cartero_field_decoder_next(fd, &field) == CARTERO_OK);
    CHECK(cartero_bytes_len(field) == 4 && memcmp(cartero_bytes_data(field), "SEND", 4) == 0);
    cartero_bytes_free(field);
    cartero_bytes *untouched = (cartero_bytes *)0x1;
    CHECK(cartero_field_decoder_next(fd, &untouched) == CARTERO_NEED_MORE);
    CHECK(untouched == (cartero_bytes *)0x1); /* outputs only on success */
    cartero_field_decoder_free(fd);
    cartero_bytes *encoded = NULL;
    CHECK(cartero_field_encode((const uint8_t *)"ana", 3, CARTERO_MAX_FIELD_LEN, &encoded) == CARTERO_OK);
    CHECK(cartero_bytes_len(encoded) == 4 && memcmp(cartero_bytes_data(encoded), "ana\0", 4) == 0);
    cartero_bytes_free(encoded);
    CHECK(cartero_field_encode((const uint8_t *)"a\0b", 3, CARTERO_MAX_FIELD_LEN, &encoded) == CARTERO_FIELD_CONTAINS_NUL);
    char big[300];
    memset(big, 'x', sizeof big);
    CHECK(cartero_field_encode((const uint8_t *)big, sizeof big, CARTERO_MAX_FIELD_LEN, &encoded) == CARTERO_FIELD_TOO_LONG);

    /* Requests: incomplete, short form, bad. */
    cartero_request_decoder *d = NULL;
    CHECK(cartero_request_decoder_new(&d) == CARTERO_OK);
    CHECK(cartero_request_decoder_feed(d, (const uint8_t *)"CONNECTEDUSERS\0", 15) == CARTERO_NEED_MORE);
    CHECK(cartero_request_decoder_has_short_form(d));
    CHECK(cartero_request_decoder_finish(d, false) == CARTERO_OK);
    cartero_request_decoder_free(d);
    CHECK(cartero_request_decoder_new(&d) == CARTERO_OK);
    CHECK(cartero_request_decoder_feed(d, (const uint8_t *)"SEND\0ana\0", 9) == CARTERO_NEED_MORE);
    CHECK(cartero_request_decoder_finish(d, true) == CARTERO_BAD_REQUEST);
    cartero_bytes *err = NULL;
    CHECK(cartero_request_decoder_error_reply(d, false, &err) == CARTERO_OK);
    CHECK(cartero_bytes_len(err) == 2 && memcmp(cartero_bytes_data(err), "2\0", 2) == 0);
    cartero_bytes_free(err);
    cartero_request_decoder_free(d);
    CHECK(cartero_request_decoder_new(&d) == CARTERO_OK);
    CHECK(cartero_request_decoder_finish(d, true) == CARTERO_DONE); /* nothing was sent */
    cartero_request_decoder_free(d);

    /* An engine driven by hand. */
    cartero_engine_config config;
    CHECK(cartero_engine_config_default(&config) == CARTERO_OK);
    CHECK(config.delivery_timeout_ms == 2000 && !config.raw_codes);
    cartero_engine *e = NULL;
    CHECK(cartero_engine_new(&config, &e) == CARTERO_OK);
    /* C has octal escapes: a digit after \0 starts a new literal. */
    CHECK(strcmp(HANDLE(e, "REGISTER\0Ana\0ana\0" "0101/2000\0"), "2") == 0); /* not a date */
    CHECK(strcmp(HANDLE(e, "REGISTER\0Ana\0ana\0" "01/01/2000\0"), "0") == 0);
    cartero_request_decoder *bob = NULL;
    CHECK(cartero_request_decoder_new(&bob) == CARTERO_OK);
    CHECK(cartero_request_decoder_feed(bob, (const uint8_t *)"REGISTER\0bob\0", 13) == CARTERO_NEED_MORE);
    CHECK(cartero_request_decoder_finish(bob, false) == CARTERO_OK);
    cartero_bytes *r = NULL;
    uint64_t hold = 0;
    CHECK(cartero_engine_handle_request(e, bob, "not an ip", &r, &hold) == CARTERO_INVALID_ARGUMENT);
    CHECK(cartero_engine_handle_request(e, bob, "10.0.0.2", &r, &hold) == CARTERO_OK);
    CHECK(cartero_engine_handle_request(e, bob, "10.0.0.2", &r, &hold) == CARTERO_NO_REQUEST);
    CHECK(cartero_engine_release(e, hold) == CARTERO_OK);
    cartero_bytes_free(r);
    cartero_request_decoder_free(bob);
    CHECK(strcmp(HANDLE(e, "CONNECT\0ana\0" "4000\0"), "0") == 0);
    CHECK(strcmp(HANDLE(e, "CONNECT\0bob\0" "5000\0"), "0") == 0);

    /* SEND: the reply carries the id; the push waits for the reply's hold. */
    cartero_request_decoder *send = request("SEND\0ana\0bob\0hola\0", sizeof "SEND\0ana\0bob\0hola\0" - 1);
    CHECK(cartero_engine_handle_request(e, send, "10.0.0.1", &r, &hold) == CARTERO_OK);
    CHECK(cartero_bytes_len(r) == 4 && memcmp(cartero_bytes_data(r), "0\0" "1\0", 4) == 0);
    cartero_bytes_free(r);
    cartero_request_decoder_free(send);
    cartero_delivery *dl = NULL;
    CHECK(cartero_engine_poll_delivery(e, 0, &dl) == CARTERO_DONE);
    CHECK(cartero_engine_release(e, hold) == CARTERO_OK);
    CHECK(cartero_engine_release(e, hold) == CARTERO_INVALID_ARGUMENT); /* released once */
    CHECK(cartero_engine_poll_delivery(e, 0, &dl) == CARTERO_OK);
    CHECK(strcmp(cartero_delivery_ip(dl), "10.0.0.1") == 0);
    CHECK(cartero_delivery_port(dl) == 5000);
    CHECK(cartero_delivery_len(dl) == 24 && memcmp(cartero_delivery_data(dl), "SEND MESSAGE\0ana\0" "1\0hola\0", 24) == 0);
    CHECK(cartero_delivery_deadline_ms(dl) == 2000);
    uint64_t deadline = 0;
    CHECK(cartero_engine_poll_timeout(e, &deadline) == CARTERO_OK && deadline == 2000);
    CHECK(cartero_engine_delivery_result(e, cartero_delivery_id(dl), true) == CARTERO_OK);
    CHECK(cartero_engine_delivery_result(e, cartero_delivery_id(dl), true) == CARTERO_UNKNOWN_DELIVERY);
    cartero_delivery_free(dl);

    /* The acknowledgement goes to ana, then it times out. */
    CHECK(cartero_engine_poll_delivery(e, 10, &dl) == CARTERO_OK);
    CHECK(cartero_delivery_port(dl) == 4000);
    CHECK(memcmp(cartero_delivery_data(dl), "SEND MESS ACK\0" "1\0", cartero_delivery_len(dl)) == 0);
    size_t expired = 0;
    CHECK(cartero_engine_handle_timeout(e, 5000, &expired) == CARTERO_OK && expired == 1);
    CHECK(cartero_engine_delivery_result(e, cartero_delivery_id(dl), true) == CARTERO_UNKNOWN_DELIVERY);
    cartero_delivery_free(dl);
    CHECK(cartero_engine_poll_timeout(e, &deadline) == CARTERO_DONE);

    /* Console lines, in order. */
    const char *expected[] = {"s> REGISTER ana FAIL", "s> REGISTER ana OK", "s> REGISTER bob OK", "s> CONNECT ana OK",
                              "s> CONNECT bob OK", "s> SEND MESSAGE 1 FROM ana TO bob"};
    for (size_t i = 0; i < sizeof expected / sizeof *expected; i++) {
        cartero_bytes *line = NULL;
        CHECK(cartero_engine_poll_event(e, &line) == CARTERO_OK);
        CHECK(cartero_bytes_len(line) == strlen(expected[i]) && memcmp(cartero_bytes_data(line), expected[i], strlen(expected[i])) == 0);
        cartero_bytes_free(line);
    }
    cartero_bytes *line = NULL;
    CHECK(cartero_engine_poll_event(e, &line) == CARTERO_DONE);
    cartero_engine_free(e);

    /* The client reports a server that is down. */
    cartero_client *client = NULL;
    CHECK(cartero_client_new("127.0.0.1", 1, 2000, &client) == CARTERO_OK);
    uint8_t code = 99;
    CHECK(cartero_client_register(client, "Ana", "ana", "01/01/2000", &code) == CARTERO_CONNECT_FAILED);
    CHECK(code == 99);
    cartero_client_free(client);

    printf("api: %d passed, 0 failed\n", passed);
    return 0;
}
