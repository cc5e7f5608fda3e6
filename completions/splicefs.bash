# bash completion for splicefs                                -*- shell-script -*-

_splicefs_mountpoints()
{
    awk '$3 == "fuse.splicefs" { gsub(/\\040/, " ", $2); print $2 }' /proc/self/mounts 2>/dev/null
}

_splicefs()
{
    local cur prev words cword
    _init_completion -n = || return

    local long_opts="--help --version --foreground --debug --single-threaded --threads --log-level --cache
        --splice --splice-move --passthrough --io-uring --timeout --max-reply"
    local o_keys="foreground debug single_threaded threads= log_level= cache= timeout= splice= splice_move passthrough= io_uring max_reply=
        allow_other allow_root default_permissions ro rw auto_unmount fsname= subtype= dev nodev suid nosuid
        exec noexec atime noatime relatime strictatime nodiratime sync async dirsync
        defaults nofail _netdev auto noauto user users nouser"

    if [[ ${words[1]} == stats ]]; then
        case $prev in
            --format) COMPREPLY=($(compgen -W "human json prometheus" -- "$cur")); return ;;
            --watch) return ;;
            --output) _filedir; return ;;
        esac
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--help --json --format --watch --output" -- "$cur"))
        else
            local IFS=$'\n'
            COMPREPLY=($(compgen -W "$(_splicefs_mountpoints)" -- "$cur"))
        fi
        return
    fi

    case $prev in
        --splice) COMPREPLY=($(compgen -W "off read write all" -- "$cur")); return ;;
        --cache) COMPREPLY=($(compgen -W "auto always never" -- "$cur")); return ;;
        --passthrough) COMPREPLY=($(compgen -W "off auto" -- "$cur")); return ;;
        --log-level) COMPREPLY=($(compgen -W "trace debug info warn error critical off" -- "$cur")); return ;;
        --threads|--timeout|--max-reply) return ;;
        -o)
            local prefix="" last="$cur"
            if [[ $cur == *,* ]]; then prefix="${cur%,*},"; last="${cur##*,}"; fi
            case $last in
                splice=*) COMPREPLY=($(compgen -P "${prefix}splice=" -W "off read write all" -- "${last#splice=}")) ;;
                cache=*) COMPREPLY=($(compgen -P "${prefix}cache=" -W "auto always never" -- "${last#cache=}")) ;;
                passthrough=*) COMPREPLY=($(compgen -P "${prefix}passthrough=" -W "off auto" -- "${last#passthrough=}")) ;;
                *) COMPREPLY=($(compgen -P "$prefix" -W "$o_keys" -- "$last")); compopt -o nospace ;;
            esac
            # Readline replaces only what follows the last "=" of the word
            # (COMP_WORDBREAKS): leave out what comes before it.
            if [[ $COMP_WORDBREAKS == *=* && $cur == *=* ]]; then
                local keep="${cur%"${cur##*=}"}"
                COMPREPLY=("${COMPREPLY[@]#"$keep"}")
            fi
            return ;;
    esac

    if [[ $cur == --*=* ]]; then
        return
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$long_opts -o -f -d -s -h -V" -- "$cur"))
        return
    fi

    # Positionals: SOURCE (a directory or block device), then MOUNTPOINT
    # (a directory); "stats" as the first word.
    local i npos=0
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --threads|--log-level|--cache|--timeout|--splice|--passthrough|--max-reply|-o) ((i++)) ;;
            -*) ;;
            *) ((npos++)) ;;
        esac
    done
    if ((npos == 0)); then
        _filedir -d
        COMPREPLY+=($(compgen -W "stats" -- "$cur"))
        # Block devices that start with what was typed (compgen -G would
        # list them all and make readline drop the typed text).
        local dev
        for dev in /dev/sd* /dev/vd* /dev/nvme* /dev/loop*; do
            [[ $dev == "$cur"* && -b $dev ]] && COMPREPLY+=("$dev")
        done
    elif ((npos == 1)); then
        _filedir -d
    fi
}
complete -F _splicefs splicefs mount.splicefs
