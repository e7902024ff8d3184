/*
 * A client of the RPC log built the way the course builds one: rpcgen -C on
 * rpc/cartero_log.x makes the stubs, this file calls them over TCP.
 *
 *   rpclog_client <host> <user> <OPERATION> [<file>]
 *
 * Exit 0 when the call succeeded, 1 with a line on stderr otherwise.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cartero_log.h"

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: rpclog_client <host> <user> <OPERATION> [<file>]\n");
        return 2;
    }
    CLIENT *clnt = clnt_create(argv[1], CARTERO_LOG_PROG, CARTERO_LOG_VERS, "tcp");
    if (clnt == NULL) {
        clnt_pcreateerror(argv[1]);
        return 1;
    }
    cartero_log_entry entry;
    entry.user = argv[2];
    entry.operation = argv[3];
    entry.file = argc == 5 ? &argv[4] : NULL;
    void *result = log_operation_1(&entry, clnt);
    if (result == NULL) {
        clnt_perror(clnt, "log_operation_1");
        clnt_destroy(clnt);
        return 1;
    }
    clnt_destroy(clnt);
    return 0;
}
