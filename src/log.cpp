#include "log.hpp"

#include <fuse_log.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <syslog.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace splicefs {

namespace {

std::mutex libfuse_mutex;
std::string libfuse_last;
bool libfuse_forward = false;

void forward_line(fuse_log_level level, const char* fmt, va_list ap) {
    char line[1024];
    std::vsnprintf(line, sizeof line, fmt, ap);
    std::string text(line);
    while (!text.empty() && text.back() == '\n')
        text.pop_back();
    // A refused backing file: passthrough.cpp says why, once, in stats and
    // the log; libfuse would call every such open an error.
    if (text.rfind("fuse: passthrough_open:", 0) == 0) level = FUSE_LOG_DEBUG;
    bool forward;
    {
        std::lock_guard lock(libfuse_mutex);
        if (level <= FUSE_LOG_ERR) libfuse_last = text;
        forward = libfuse_forward;
    }
    if (!forward) {
        spdlog::debug("libfuse: {}", text);
        return;
    }
    switch (level) {
    case FUSE_LOG_EMERG:
    case FUSE_LOG_ALERT:
    case FUSE_LOG_CRIT:
    case FUSE_LOG_ERR:
        spdlog::error("libfuse: {}", text);
        break;
    case FUSE_LOG_WARNING:
        spdlog::warn("libfuse: {}", text);
        break;
    case FUSE_LOG_DEBUG:
        spdlog::debug("{}", text);
        break;
    default:
        spdlog::info("libfuse: {}", text);
        break;
    }
}

void libfuse_log(fuse_log_level level, const char* fmt, va_list ap) {
    // Callers read errno after a call that logged (fuse_passthrough_open).
    const int saved_errno = errno;
    forward_line(level, fmt, ap);
    errno = saved_errno;
}

void install(std::shared_ptr<spdlog::logger> logger, const std::string& level) {
    logger->set_level(spdlog::level::from_str(level));
    spdlog::set_default_logger(std::move(logger));
    fuse_set_log_func(libfuse_log);
}

} // namespace

void log_to_stderr(const std::string& level) {
    spdlog::drop("splicefs");
    auto logger = spdlog::stderr_color_mt("splicefs");
    logger->set_pattern("splicefs: %^%l%$: %v");
    install(std::move(logger), level);
}

void log_to_syslog(const std::string& level) {
    spdlog::drop("splicefs");
    auto logger = spdlog::syslog_logger_mt("splicefs", "splicefs", LOG_PID, LOG_DAEMON, false);
    logger->set_pattern("%v");
    install(std::move(logger), level);
}

std::string last_libfuse_message() {
    std::lock_guard lock(libfuse_mutex);
    return libfuse_last;
}

void forward_libfuse_messages(bool forward) {
    std::lock_guard lock(libfuse_mutex);
    libfuse_forward = forward;
}

} // namespace splicefs
