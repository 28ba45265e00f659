"""One "proxy" of the fleet test, run as its own process by test_watch_fleet.py.

Usage: python watch_proxy.py URL METHOD INTERVAL.  Loads the rules, starts a
watcher, prints ``ready`` once it watches, then answers each stdin line
``PROTO IP PORT`` with the id of the winning rule.
"""

import sys
import time

import tcpmgm


def main() -> None:
    url, method, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
    mgr = tcpmgm.TcpMgm(url)
    watcher = mgr.watch(method=method, interval=interval, debounce=0.05)
    while watcher.reloads == 0:  # watching, and caught up with the table
        time.sleep(0.01)
    print("ready", watcher.active_method, flush=True)
    for line in sys.stdin:
        proto, ip, port = line.split()
        print(mgr.lookup(proto, ip, int(port)).id, flush=True)
    watcher.stop()
    mgr.close()


if __name__ == "__main__":
    main()
