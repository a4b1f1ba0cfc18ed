# Type stubs of the NixOS test driver (nixos/lib/test-driver/src/test_driver in nixpkgs), as far
# as RealChat's VM test scripts use it. Written from the driver's source; see machine.pyi.
