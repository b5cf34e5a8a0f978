#!/bin/sh
# Starts Debian's OpenArena dedicated server (/usr/games/openarena-server, the package's own
# wrapper around ioq3ded with baseoa) with its home on /data and a small config from the
# environment. The server sends nothing off the machine: dedicated 1 (a LAN server: no master
# heartbeats, and the master names are cleared too), IPv4 only (no IPv6 multicast discovery),
# no downloads.
set -eu
home="${OA_HOME:-/data}"
mkdir -p "$home/baseoa"
# A value for a quoted cvar: no quotes, semicolons or line breaks (the config's separators).
clean() { printf '%s' "$1" | tr -d '";\r\n' | cut -c1-64; }
cat > "$home/baseoa/peon-server.cfg" <<CFG
// Written by the image's entrypoint at each start; edit the environment, not this file.
set sv_hostname "$(clean "${OA_HOSTNAME:-An OpenArena server}")"
set sv_maxclients "$(clean "${OA_MAXCLIENTS:-8}")"
set g_gametype "$(clean "${OA_GAMETYPE:-0}")"
set fraglimit "$(clean "${OA_FRAGLIMIT:-20}")"
set timelimit "$(clean "${OA_TIMELIMIT:-15}")"
set g_motd "$(clean "${OA_MOTD:-}")"
set sv_master1 ""
set sv_master2 ""
set sv_master3 ""
set sv_master4 ""
set sv_master5 ""
set sv_allowDownload 0
set sv_dlURL ""
CFG
# Bots (OA_BOTS: names such as "Sarge Grunt") join once the map is up; getstatus lists them as
# players, as a browser shows them.
bots=""
for bot in $(clean "${OA_BOTS:-}" | tr -cd 'A-Za-z0-9 '); do
  bots="$bots +addbot $bot 1"
done
# shellcheck disable=SC2086 # $bots: one word per bot command
exec /usr/games/openarena-server \
  +set dedicated 1 +set net_enabled 1 +set net_port "${OA_PORT:-27960}" \
  +set fs_homepath "$home" +set ttycon 0 +set com_hunkmegs 64 \
  +exec peon-server.cfg +map "$(clean "${OA_MAP:-oa_dm1}")" $bots "$@"
