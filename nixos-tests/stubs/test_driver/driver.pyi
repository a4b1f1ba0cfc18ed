# test_driver/driver.py: the `driver` global.
from collections.abc import Callable
from contextlib import AbstractContextManager

from test_driver.machine import BaseMachine, NspawnMachine, QemuMachine
from test_driver.vlan import VLan

class Driver:
    vlans: list[VLan]
    machines_qemu: list[QemuMachine]
    machines_nspawn: list[NspawnMachine]
    global_timeout: int
    @property
    def machines(self) -> list[QemuMachine | NspawnMachine]: ...
    def start_all(self) -> None: ...
    def join_all(self) -> None: ...
    def run_tests(self) -> None: ...
    def test_script(self) -> None: ...
    def serial_stdout_on(self) -> None: ...
    def serial_stdout_off(self) -> None: ...
    def create_machine(
        self, start_command: str, *, name: str | None = None, keep_machine_state: bool = False
    ) -> BaseMachine: ...
    def polling_condition(
        self,
        fun_: Callable[[], bool] | None = None,
        *,
        seconds_interval: float = 2.0,
        description: str | None = None,
    ) -> Callable[[Callable[[], bool]], AbstractContextManager[None]] | AbstractContextManager[None]: ...
