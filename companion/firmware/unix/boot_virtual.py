# Start-up of the virtual companion board in the MicroPython unix port: what the Pico's
# boot sequence does before the REPL. Confines the filesystem to the board's directory, then
# runs main.py unless the simulator restarts us into the raw REPL (mpremote's soft reset).
import os
import sys

import machine  # the stand-in, imported before the host filesystem disappears  # noqa: F401

os.umount("/")
os.mount(os.VfsPosix(os.getenv("VBOARD_ROOT")), "/")
os.chdir("/")
sys.path[:] = ["", "/lib", ".frozen"]
if os.getenv("VBOARD_RUN_MAIN") == "1":
    try:
        os.stat("main.py")
    except OSError:
        pass
    else:
        try:
            with open("main.py") as source:
                code = compile(source.read(), "main.py", "exec")
            exec(code, {"__name__": "__main__"})
        except KeyboardInterrupt:
            pass
        except SystemExit:
            raise
        except Exception as error:
            sys.print_exception(error)
