// Serves the mount's counters on a Unix socket, outside the FUSE request
// queue (so it answers while every worker is blocked) and outside the
// mounted tree (so the mount shows exactly the source).
//
// The socket is /run/splicefs/MAJOR:MINOR.sock for a root daemon and
// $XDG_RUNTIME_DIR/splicefs/MAJOR:MINOR.sock otherwise, named by the mount's
// device number. Only the mounting user and root may read it (SO_PEERCRED).
// A connection gets one report in the line format of stats_format.hpp.
#pragma once

#include "filesystem.hpp"

#include <sys/types.h>

#include <string>
#include <thread>

namespace splicefs {

std::string stats_socket_dir(uid_t uid);
std::string stats_socket_path(uid_t uid, dev_t dev);
// Makes the calling user's socket directory (mode 0700) or checks the one
// there. `unsafe`: it exists but belongs to another user or is no directory
// (whoever owns it could replace the socket), refused as ssh-agent and tmux
// refuse theirs; otherwise an error only means stats will not be served.
struct SocketDirProblem {
    std::string error; // names the directory; empty when all is well
    bool unsafe = false;
};
SocketDirProblem make_private_socket_dir();

class StatsServer {
  public:
    explicit StatsServer(Filesystem& fs) : fs_(fs) {}
    ~StatsServer() { stop(); }
    StatsServer(const StatsServer&) = delete;
    StatsServer& operator=(const StatsServer&) = delete;

    // Binds the socket for the mount with device number `dev`; returns an error or "".
    std::string start(dev_t dev);
    void stop();

  private:
    void serve();
    void drop_client_at_fd_limit();
    std::string report() const;

    Filesystem& fs_;
    std::string path_;
    ino_t socket_ino_ = 0; // of the socket at path_ that is ours
    int listen_fd_ = -1;
    int stop_fd_ = -1;
    int reserve_fd_ = -1; // given up to accept (and drop) a client at the fd limit
    std::thread thread_;
    dev_t dev_ = 0;
};

} // namespace splicefs
