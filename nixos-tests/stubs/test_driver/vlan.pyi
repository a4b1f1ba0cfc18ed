# test_driver/vlan.py
class VLan:
    nr: int
    def stop(self) -> None: ...
