// A SEQPACKET peer for the stock-Linux test guest (tests/appliance-linux-siblings.test.ts):
// Linux's AF_VSOCK SOCK_SEQPACKET from C, since socat cannot keep message boundaries
// through its echo addresses. Built statically by tests/support/vsock-test-build.ts.
//
//   vsock-seqpacket-peer echo PORT            accept one connection, send every message
//                                              back unchanged, print "echoed N messages"
//   vsock-seqpacket-peer send CID PORT SIZE... send one message per SIZE (byte i of
//                                              message m is (i * 7 + m) & 0xff), read each
//                                              back, print "ok N" or what differed
#include <errno.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_MSG (1 << 20)

static unsigned char buf[MAX_MSG], want[MAX_MSG];

static int echo(unsigned port) {
  int s = socket(AF_VSOCK, SOCK_SEQPACKET, 0);
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) return perror("listen"), 1;
  printf("listening %u\n", port);
  fflush(stdout);
  int c = accept(s, NULL, NULL);
  if (c < 0) return perror("accept"), 1;
  long n = 0;
  for (;;) {
    ssize_t r = recv(c, buf, sizeof buf, 0);
    if (r < 0) return perror("recv"), 1;
    if (r == 0) break;
    if (send(c, buf, r, 0) != r) return perror("send"), 1;
    n++;
  }
  printf("echoed %ld messages\n", n);
  return 0;
}

static int sendall(unsigned cid, unsigned port, int count, char **sizes) {
  int s = socket(AF_VSOCK, SOCK_SEQPACKET, 0);
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = cid};
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a)) return perror("connect"), 1;
  for (int m = 0; m < count; m++) {
    long size = atol(sizes[m]);
    if (size < 1 || size > MAX_MSG) return fprintf(stderr, "bad size %s\n", sizes[m]), 1;
    for (long i = 0; i < size; i++) want[i] = (unsigned char)((i * 7 + m) & 0xff);
    if (send(s, want, size, 0) != size) return perror("send"), 1;
    ssize_t r = recv(s, buf, sizeof buf, 0);
    if (r != size) return printf("message %d: sent %ld bytes, got back %zd\n", m, size, r), 1;
    if (memcmp(buf, want, size) != 0) return printf("message %d: bytes differ\n", m), 1;
  }
  printf("ok %d\n", count);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "echo") == 0) return echo(atoi(argv[2]));
  if (argc >= 5 && strcmp(argv[1], "send") == 0) return sendall(atoi(argv[2]), atoi(argv[3]), argc - 4, argv + 4);
  fprintf(stderr, "usage: %s echo PORT | send CID PORT SIZE...\n", argv[0]);
  return 2;
}
