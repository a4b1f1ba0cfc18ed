# Declarations of the globals the NixOS test driver hands a testScript (Driver.test_symbols in
# test_driver/driver.py), prepended to each script before it is type-checked, as nixpkgs does
# with its own prepend file. check.sh appends `<machine>: QemuMachine` for each node.
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol
from unittest import TestCase

from test_driver.debug import DebugAbstract
from test_driver.driver import Driver
from test_driver.logger import AbstractLogger
from test_driver.machine import BaseMachine, NspawnMachine, QemuMachine, retry
from test_driver.vlan import VLan

start_all: Callable[[], None]
test_script: Callable[[], None]
run_tests: Callable[[], None]
join_all: Callable[[], None]
serial_stdout_on: Callable[[], None]
serial_stdout_off: Callable[[], None]
subtest: Callable[[str], AbstractContextManager[None]]
machines_qemu: list[QemuMachine]
machines_nspawn: list[NspawnMachine]
vlans: list[VLan]
driver: Driver
log: AbstractLogger
debug: DebugAbstract
t: TestCase


class CreateMachine(Protocol):
    def __call__(
        self, start_command: str, *, name: str | None = None, keep_machine_state: bool = False
    ) -> BaseMachine: ...


class PollingCondition(Protocol):
    def __call__(
        self,
        fun_: Callable[[], bool] | None = None,
        *,
        seconds_interval: float = 2.0,
        description: str | None = None,
    ) -> Callable[[Callable[[], bool]], AbstractContextManager[None]] | AbstractContextManager[None]: ...


create_machine: CreateMachine
polling_condition: PollingCondition
# `os`, `retry` and `BaseMachine` are globals of the script too (imported above).
