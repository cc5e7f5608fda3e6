// Happens-before edges that the kernel provides and ThreadSanitizer cannot see.
//
// An object published to another thread through a system call (a pointer
// handed to the kernel in a reply and named again in a later request read by
// another thread) is ordered by the kernel's own locking. TSan only models
// the calls it intercepts, and splice() is not one of them, so it would
// report every first use of such an object as a race. publish() before the
// pointer leaves, adopt() when it comes back: compiled away outside TSan.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define UTIL_HANDOFF_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UTIL_HANDOFF_TSAN 1
#endif
#endif

#ifdef UTIL_HANDOFF_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace util {

inline void publish([[maybe_unused]] const void* object) {
#ifdef UTIL_HANDOFF_TSAN
    __tsan_release(const_cast<void*>(object));
#endif
}

inline void adopt([[maybe_unused]] const void* object) {
#ifdef UTIL_HANDOFF_TSAN
    __tsan_acquire(const_cast<void*>(object));
#endif
}

} // namespace util
