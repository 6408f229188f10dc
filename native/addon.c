/*
 * dmkit's native helpers: what Node's fs cannot do for a block device.
 *
 *   punchHole(fd, offset, length)  fallocate(PUNCH_HOLE | KEEP_SIZE)
 *   seekData(fd, offset)           lseek(SEEK_DATA)
 *   seekHole(fd, offset)           lseek(SEEK_HOLE)
 *       all three run on libuv's thread pool (napi_async_work) and return a
 *       promise; a failure rejects with an Error whose `code` is the errno
 *       name (EOPNOTSUPP, ENXIO, ...), `errno` its negative number as in
 *       Node's own system errors, and `syscall` the call.
 *
 *   readNowait(fd, buf, position)   preadv2(RWF_NOWAIT)
 *       synchronous, on the calling (main) thread: the kernel copies only
 *       what is already in the page cache, never starts or waits for I/O,
 *       and answers EAGAIN when the first page is not cached, so the caller
 *       never blocks and goes to the thread pool instead. Returns the bytes
 *       read (possibly fewer than asked) or -errno (EOPNOTSUPP where the
 *       file system has no RWF_NOWAIT reads: tmpfs on Linux 6.18).
 *       No write twin: buffered pwritev2(RWF_NOWAIT) answers EOPNOTSUPP on
 *       ext4 and tmpfs here (bench/README.md), so it would only add a
 *       system call to every write.
 *
 *   crc32cRaw(buf, register, useTable)   synchronous, see crc32c.h
 *   crc32cHardware                       true when SSE4.2 is used
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8

#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "crc32c.h"

#define MAX_SAFE_INTEGER 9007199254740991.0

#define NAPI_CALL(env, call)                                                 \
	do {                                                                 \
		if ((call) != napi_ok) {                                     \
			throw_last_error(env);                               \
			return NULL;                                         \
		}                                                            \
	} while (0)

static void throw_last_error(napi_env env)
{
	const napi_extended_error_info *info = NULL;
	bool pending = false;

	napi_is_exception_pending(env, &pending);
	if (pending)
		return;
	napi_get_last_error_info(env, &info);
	napi_throw_error(env, "EINVAL",
			 info && info->error_message ? info->error_message : "Node-API call failed");
}

/* A number argument that must be a whole number in [0, 2^53). */
static bool get_offset(napi_env env, napi_value v, const char *what, int64_t *out)
{
	double d;
	char msg[96];

	if (napi_get_value_double(env, v, &d) != napi_ok || d < 0 || d > MAX_SAFE_INTEGER ||
	    d != (double)(int64_t)d) {
		snprintf(msg, sizeof(msg), "%s must be a non-negative safe integer", what);
		napi_throw_range_error(env, "EINVAL", msg);
		return false;
	}
	*out = (int64_t)d;
	return true;
}

static bool get_fd(napi_env env, napi_value v, int *out)
{
	int32_t fd;

	if (napi_get_value_int32(env, v, &fd) != napi_ok || fd < 0) {
		napi_throw_type_error(env, "EBADF", "fd must be a non-negative integer");
		return false;
	}
	*out = fd;
	return true;
}

/* ---- file operations on the thread pool ---- */

enum file_op { OP_PUNCH_HOLE, OP_SEEK_DATA, OP_SEEK_HOLE };

static const char *const op_syscall[] = {
	[OP_PUNCH_HOLE] = "fallocate",
	[OP_SEEK_DATA] = "lseek(SEEK_DATA)",
	[OP_SEEK_HOLE] = "lseek(SEEK_HOLE)",
};

struct file_work {
	napi_async_work work;
	napi_deferred deferred;
	enum file_op op;
	int fd;
	int64_t offset;
	int64_t length;
	int64_t result;
	int err; /* errno, 0 on success */
};

static void file_work_execute(napi_env env, void *data)
{
	struct file_work *w = data;
	(void)env;

	switch (w->op) {
	case OP_PUNCH_HOLE:
		w->result = fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				      w->offset, w->length);
		break;
	case OP_SEEK_DATA:
		w->result = lseek(w->fd, w->offset, SEEK_DATA);
		break;
	case OP_SEEK_HOLE:
		w->result = lseek(w->fd, w->offset, SEEK_HOLE);
		break;
	}
	w->err = w->result < 0 ? errno : 0;
}

static const char *errno_name(int err)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
	const char *name = strerrorname_np(err);
	if (name)
		return name;
#endif
	return "EIO";
}

static napi_value os_error(napi_env env, struct file_work *w)
{
	napi_value code, msg, err, num, syscall;
	char text[160];

	snprintf(text, sizeof(text), "%s: %s (fd %d, offset %lld)", op_syscall[w->op],
		 strerror(w->err), w->fd, (long long)w->offset);
	napi_create_string_utf8(env, errno_name(w->err), NAPI_AUTO_LENGTH, &code);
	napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
	napi_create_error(env, code, msg, &err);
	napi_create_int32(env, -w->err, &num);
	napi_set_named_property(env, err, "errno", num);
	napi_create_string_utf8(env, op_syscall[w->op], NAPI_AUTO_LENGTH, &syscall);
	napi_set_named_property(env, err, "syscall", syscall);
	return err;
}

static void file_work_complete(napi_env env, napi_status status, void *data)
{
	struct file_work *w = data;
	napi_value value;

	if (status != napi_ok) {
		w->err = ECANCELED;
		napi_reject_deferred(env, w->deferred, os_error(env, w));
	} else if (w->err) {
		napi_reject_deferred(env, w->deferred, os_error(env, w));
	} else {
		if (w->op == OP_PUNCH_HOLE)
			napi_get_undefined(env, &value);
		else
			napi_create_double(env, (double)w->result, &value);
		napi_resolve_deferred(env, w->deferred, value);
	}
	napi_delete_async_work(env, w->work);
	free(w);
}

static napi_value queue_file_work(napi_env env, napi_callback_info info, enum file_op op)
{
	size_t argc = 3;
	napi_value argv[3], promise, name;
	struct file_work w = { .op = op };
	size_t want = op == OP_PUNCH_HOLE ? 3 : 2;

	NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < want) {
		napi_throw_type_error(env, "EINVAL", "missing arguments");
		return NULL;
	}
	if (!get_fd(env, argv[0], &w.fd) || !get_offset(env, argv[1], "offset", &w.offset))
		return NULL;
	if (op == OP_PUNCH_HOLE && !get_offset(env, argv[2], "length", &w.length))
		return NULL;

	struct file_work *heap = malloc(sizeof(*heap));
	if (!heap) {
		napi_throw_error(env, "ENOMEM", "out of memory");
		return NULL;
	}
	*heap = w;
	NAPI_CALL(env, napi_create_promise(env, &heap->deferred, &promise));
	NAPI_CALL(env, napi_create_string_utf8(env, op_syscall[op], NAPI_AUTO_LENGTH, &name));
	NAPI_CALL(env, napi_create_async_work(env, NULL, name, file_work_execute,
					      file_work_complete, heap, &heap->work));
	NAPI_CALL(env, napi_queue_async_work(env, heap->work));
	return promise;
}

static napi_value punch_hole(napi_env env, napi_callback_info info)
{
	return queue_file_work(env, info, OP_PUNCH_HOLE);
}

static napi_value seek_data(napi_env env, napi_callback_info info)
{
	return queue_file_work(env, info, OP_SEEK_DATA);
}

static napi_value seek_hole(napi_env env, napi_callback_info info)
{
	return queue_file_work(env, info, OP_SEEK_HOLE);
}

/* ---- positional I/O that never waits ---- */

static napi_value read_nowait(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3], out;
	napi_typedarray_type type;
	bool is_typed = false;
	struct iovec iov;
	int64_t position;
	ssize_t n;
	int fd;

	NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 3 || napi_is_typedarray(env, argv[1], &is_typed) != napi_ok || !is_typed) {
		napi_throw_type_error(env, "EINVAL", "(fd, buf, position): buf must be a Uint8Array");
		return NULL;
	}
	if (!get_fd(env, argv[0], &fd) || !get_offset(env, argv[2], "position", &position))
		return NULL;
	NAPI_CALL(env, napi_get_typedarray_info(env, argv[1], &type, &iov.iov_len, &iov.iov_base, NULL, NULL));
	if (type != napi_uint8_array) {
		napi_throw_type_error(env, "EINVAL", "(fd, buf, position): buf must be a Uint8Array");
		return NULL;
	}
	n = preadv2(fd, &iov, 1, position, RWF_NOWAIT);
	NAPI_CALL(env, napi_create_double(env, n < 0 ? -(double)errno : (double)n, &out));
	return out;
}


/* ---- crc32c ---- */

static napi_value crc32c_raw_js(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3], out;
	napi_typedarray_type type;
	size_t length;
	void *data;
	uint32_t reg;
	bool use_table = false, is_typed = false;

	NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 2 || napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed) {
		napi_throw_type_error(env, "EINVAL", "crc32cRaw(buf, register): buf must be a Uint8Array");
		return NULL;
	}
	NAPI_CALL(env, napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL));
	if (type != napi_uint8_array && type != napi_uint8_clamped_array) {
		napi_throw_type_error(env, "EINVAL", "crc32cRaw(buf, register): buf must be a Uint8Array");
		return NULL;
	}
	/* ToUint32 semantics: -1 and 0xFFFFFFFF are the same register. */
	NAPI_CALL(env, napi_get_value_uint32(env, argv[1], &reg));
	if (argc > 2)
		NAPI_CALL(env, napi_get_value_bool(env, argv[2], &use_table));
	reg = use_table ? crc32c_raw_table(reg, data, length) : crc32c_raw(reg, data, length);
	NAPI_CALL(env, napi_create_uint32(env, reg, &out));
	return out;
}

NAPI_MODULE_INIT()
{
	napi_value fn, flag;

	crc32c_init();
#define EXPORT_FN(name, cb)                                                              \
	do {                                                                             \
		NAPI_CALL(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn)); \
		NAPI_CALL(env, napi_set_named_property(env, exports, name, fn));          \
	} while (0)
	EXPORT_FN("punchHole", punch_hole);
	EXPORT_FN("seekData", seek_data);
	EXPORT_FN("seekHole", seek_hole);
	EXPORT_FN("readNowait", read_nowait);
	EXPORT_FN("crc32cRaw", crc32c_raw_js);
#undef EXPORT_FN
	NAPI_CALL(env, napi_get_boolean(env, crc32c_hardware(), &flag));
	NAPI_CALL(env, napi_set_named_property(env, exports, "crc32cHardware", flag));
	return exports;
}
