// Logging: stderr in the foreground, syslog (LOG_DAEMON, with the pid) once
// daemonized. libfuse's own messages are routed here too.
#pragma once

#include <string>

namespace splicefs {

void log_to_stderr(const std::string& level);
// Call only in the daemon process, after fork().
void log_to_syslog(const std::string& level);
// Until the mount is made, libfuse's messages are kept, not printed, so that a
// failure is reported as one line; this returns the last one.
std::string last_libfuse_message();
void forward_libfuse_messages(bool forward);

} // namespace splicefs
