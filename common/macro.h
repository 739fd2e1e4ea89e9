/*
 * Small language helpers shared by every layer: scope-bound cleanup, ownership hand-off and
 * array sizes. Nothing here allocates or logs.
 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f)   __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _unused_       __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

/* Hand ownership out of a _cleanup_ variable: returns the pointer and leaves NULL behind. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _t_ = (p);                                                                   \
        (p) = NULL;                                                                                \
        _t_;                                                                                       \
    })
#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _t_ = (fd);                                                                            \
        (fd) = -1;                                                                                 \
        _t_;                                                                                       \
    })

#define DEFINE_CLEANUP_FUNC(type, func)                                                            \
    static inline void func##p(type *p)                                                            \
    {                                                                                              \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }

/*
 * Make room for element `n` of a growing array `v` of capacity `cap` (casync's GREEDY_REALLOC):
 * when full, the capacity doubles (to `first_cap` the first time). Evaluates to 0, or to
 * -ENOMEM with `v` and `cap` unchanged.
 */
#define GROW_ARRAY(v, cap, n, first_cap)                                                          \
    ({                                                                                             \
        int _r_ = 0;                                                                               \
        if ((size_t)(n) >= (cap)) {                                                                \
            size_t _c_ = (cap) ? 2 * (cap) : (first_cap);                                          \
            __typeof__(v) _p_ =                                                                    \
                    _c_ > SIZE_MAX / sizeof(*(v)) ? NULL : realloc((v), _c_ * sizeof(*(v)));       \
            if (_p_) {                                                                             \
                (v) = _p_;                                                                         \
                (cap) = _c_;                                                                       \
            } else                                                                                 \
                _r_ = -ENOMEM;                                                                     \
        }                                                                                          \
        _r_;                                                                                       \
    })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)     ((a) < (b) ? (a) : (b))
#define MAX(a, b)     ((a) > (b) ? (a) : (b))

static inline void freep(void *p)
{
    free(*(void **)p);
}

static inline void closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}
