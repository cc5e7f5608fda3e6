# fish completion for splicefs

function __splicefs_mountpoints
    awk '$3 == "fuse.splicefs" { gsub(/\\040/, " ", $2); print $2 }' /proc/self/mounts 2>/dev/null
end

function __splicefs_o_keys
    printf '%s\n' foreground debug single_threaded threads= log_level= cache=auto cache=always cache=never timeout= \
        splice=off splice=read splice=write splice=all splice_move passthrough=off passthrough=auto io_uring max_reply= allow_other allow_root \
        default_permissions ro rw auto_unmount fsname= subtype= dev nodev suid nosuid exec noexec atime noatime \
        relatime strictatime nodiratime sync async dirsync defaults nofail _netdev auto noauto user users nouser
end

set -l in_stats '__fish_seen_subcommand_from stats'
complete -c splicefs -f -n "not $in_stats; and __fish_is_first_arg" -a stats -d 'Report zero-copy hit rates'
complete -c splicefs -n "not $in_stats" -a '(__fish_complete_directories) (string match -r "^/dev/(sd|vd|nvme|loop).*" -- /dev/*)'
complete -c splicefs -n "not $in_stats" -s h -l help -d 'Print help and exit'
complete -c splicefs -n "not $in_stats" -s V -l version -d 'Print the version and exit'
complete -c splicefs -n "not $in_stats" -s f -l foreground -d 'Stay in the foreground'
complete -c splicefs -n "not $in_stats" -s d -l debug -d 'Trace every request'
complete -c splicefs -n "not $in_stats" -s s -l single-threaded -d 'One worker thread'
complete -c splicefs -n "not $in_stats" -l threads -x -d 'Worker threads'
complete -c splicefs -n "not $in_stats" -l log-level -x -a 'trace debug info warn error critical off' -d 'Log level'
complete -c splicefs -n "not $in_stats" -l cache -x -a 'auto always never' -d 'Kernel caching policy'
complete -c splicefs -n "not $in_stats" -l splice -x -a 'off read write all' -d 'Zero-copy mode'
complete -c splicefs -n "not $in_stats" -l splice-move -d 'Use SPLICE_F_MOVE'
complete -c splicefs -n "not $in_stats" -l passthrough -x -a 'off auto' -d 'Kernel passthrough'
complete -c splicefs -n "not $in_stats" -l io-uring -d 'FUSE over io_uring'
complete -c splicefs -n "not $in_stats" -l timeout -x -d 'Seconds names and attributes are trusted'
complete -c splicefs -n "not $in_stats" -l max-reply -x -d 'Largest READ reply, e.g. 1M'
complete -c splicefs -n "not $in_stats" -s o -x -a '(__splicefs_o_keys)' -d 'Mount options'
complete -c splicefs -n "$in_stats" -f -a '(__splicefs_mountpoints)'
complete -c splicefs -n "$in_stats" -l json -d 'JSON output'
complete -c splicefs -n "$in_stats" -l format -x -a 'human json prometheus' -d 'Output format'
complete -c splicefs -n "$in_stats" -l watch -d 'One line per mount every SECONDS'
complete -c splicefs -n "$in_stats" -l output -r -d 'Write to FILE atomically'
complete -c splicefs -n "$in_stats" -l help -d 'Print help'
