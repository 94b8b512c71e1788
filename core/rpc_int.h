/*
 * rpc_int.h - what rpc_client.c and rpc_server.c share beyond rpc.h.
 * Only rpc*.c and tests/unit/rpc_test.c (which feeds the observer
 * hand-made lines) include it.
 *
 * gRPC has one log function per process (gpr_set_log_function), installed
 * by cfr_rpc_global_init in rpc_client.c. The server needs to see some of
 * those lines: gRPC 1.51 reports a failed server-side TLS handshake only
 * there (rpc_server.c explains). So the one log function hands every line
 * to the server's observer first.
 */
#ifndef CFR_RPC_INT_H
#define CFR_RPC_INT_H

/*
 * Looks at one gRPC log line (file as gRPC names it, message borrowed) and
 * turns a server handshake failure into a CFR_RPC_TLS_FAILED audit record
 * for every running server. Cheap for every other line. Any thread.
 */
void cfr_rpc_server_observe_grpc_log(const char *file, const char *message);

#endif /* CFR_RPC_INT_H */
