/* libFuzzer target: any file content either fails sec_load_public with a
 * message naming the file, or yields 40 characters that Z85-decode to a
 * 32-byte key. Broken invariants trap so the fuzzer sees them. */
#define _GNU_SOURCE
#include "pipeline/security.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zmq.h>

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("key", MFD_CLOEXEC);
    require(fd >= 0);
    require(write(fd, data, size) == (ssize_t)size);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char key[SEC_KEY_TEXT];
    sl_err err = {{0}};
    if (sec_load_public(path, key, &err) == 0) {
        uint8_t raw[32];
        require(strlen(key) == SEC_KEY_TEXT - 1);
        require(zmq_z85_decode(raw, key) != NULL);
    } else {
        require(memchr(err.msg, '\0', sizeof err.msg) != NULL);
        require(strncmp(err.msg, path, strlen(path)) == 0);
    }
    close(fd);
    return 0;
}
