# The Rust workspace built with crane: dependencies once (`buildDepsOnly`), then every binary in
# one build, one package per binary cut out of it, one OCI image per service, and the cargo
# checks (clippy, fmt, unit tests) sharing the same dependency artifacts.
{ pkgs, crane, revision }:

let
  inherit (pkgs) lib;

  root = ../.;
  workspaceToml = builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"));
  inherit (workspaceToml.workspace.package) version;
  repository = workspaceToml.workspace.package.repository or null;

  # The toolchain rustup and CI use, read from the same file, whatever rustc nixpkgs carries.
  craneLib = (crane.mkLib pkgs).overrideToolchain
    (p: p.rust-bin.fromRustupToolchainFile (root + "/rust-toolchain.toml"));

  # Cargo sources plus what the build embeds: the .proto files (crates/proto/build.rs) and the
  # migrations (sqlx::migrate!, and the bench's copy of the messaging schema).
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (craneLib.fileset.commonCargoSources root)
      (lib.fileset.fileFilter (file: file.hasExt "proto" || file.hasExt "sql") (root + "/crates"))
    ];
  };

  # rdkafka-sys (default features off, `libz` on) builds librdkafka from its vendored sources with
  # mklove: build.rs copies them into OUT_DIR with `cp -a` and runs `./configure` there. In the
  # sandbox that fails twice: the copy keeps the store's read-only modes, so configure cannot
  # write its output, and configure starts with `#!/usr/bin/env bash`, which does not exist there.
  # Patching the vendored crate fixes both without changing what is built.
  cargoVendorDir = craneLib.vendorCargoDeps {
    inherit src;
    overrideVendorCargoPackage = package: drv:
      if package.name == "rdkafka-sys" then
        drv.overrideAttrs
          (old: {
            postInstall = (old.postInstall or "") + ''
              patchShebangs --build "$out/librdkafka/configure"
              substituteInPlace "$out/build.rs" --replace-fail \
                'run_command_or_fail(".", "cp", &["-a", "librdkafka/.", &out_dir]);' \
                'run_command_or_fail(".", "cp", &["-a", "librdkafka/.", &out_dir]); run_command_or_fail(&out_dir, "chmod", &["-R", "u+w", "."]);'
            '';
          })
      else drv;
  };

  commonArgs = {
    inherit src cargoVendorDir version;
    pname = "realchat";
    strictDeps = true;
    # mklove (librdkafka's configure) needs bash, make and a C/C++ compiler, all in stdenv;
    # pkg-config lets libz-sys and librdkafka find zlib instead of building their own, and
    # librdkafka find OpenSSL (TLS and SASL/SCRAM to managed brokers).
    nativeBuildInputs = [ pkgs.pkg-config ];
    buildInputs = [ pkgs.openssl pkgs.zlib ];
  };

  # Every dependency of every workspace member, test and dev dependencies included, so the
  # checks reuse them too.
  cargoArtifacts = craneLib.buildDepsOnly (commonArgs // {
    cargoExtraArgs = "--locked --workspace";
  });

  # `cargo build` of the default members: every binary (the services, `realchat`, `bench`);
  # xtask and test-support are not default members and are not shipped.
  workspace = craneLib.buildPackage (commonArgs // {
    inherit cargoArtifacts;
    # The unit tests run once, in checks.nextest.
    doCheck = false;
  });

  binaries = {
    auth = "The RealChat auth service";
    messaging = "The RealChat messaging service";
    profile = "The RealChat profile service";
    delivery = "The RealChat delivery service";
    gateway = "The RealChat gateway";
    realchat = "The realchat command line";
    bench = "RealChat's load generator and correctness checker";
  };

  # One binary (and so one runtime closure) per package.
  binaryPackage = name: description:
    pkgs.runCommand "realchat-${name}-${version}"
      {
        meta = {
          inherit description;
          mainProgram = name;
          license = lib.licenses.asl20;
          platforms = lib.platforms.linux;
        };
      } ''
      install -Dm755 ${workspace}/bin/${name} $out/bin/${name}
    '';

  packages = lib.mapAttrs binaryPackage binaries;

  # Main and admin ports, as in the NixOS module and the binaries' defaults.
  servicePorts = {
    auth = { listen = "REALCHAT_AUTH_GRPC_ADDR"; port = 7051; admin = "REALCHAT_AUTH_ADMIN_ADDR"; adminPort = 9181; };
    messaging = { listen = "REALCHAT_MESSAGING_GRPC_ADDR"; port = 7052; admin = "REALCHAT_MESSAGING_ADMIN_ADDR"; adminPort = 9182; };
    profile = { listen = "REALCHAT_PROFILE_GRPC_ADDR"; port = 7053; admin = "REALCHAT_PROFILE_ADMIN_ADDR"; adminPort = 9183; };
    delivery = { listen = "REALCHAT_DELIVERY_ADDR"; port = 8081; admin = "REALCHAT_DELIVERY_ADMIN_ADDR"; adminPort = 9184; };
    gateway = { listen = "REALCHAT_GATEWAY_ADDR"; port = 8080; admin = "REALCHAT_GATEWAY_ADMIN_ADDR"; adminPort = 9180; };
  };

  # The binary, CA certificates and time zone data (plus the binary's runtime closure), run as
  # nobody. No timestamps from the build: the same commit gives the same image digest.
  image = name: ports:
    let
      package = packages.${name};
    in
    pkgs.dockerTools.streamLayeredImage {
      name = "realchat-${name}";
      tag = version;
      contents = [ pkgs.cacert pkgs.tzdata ];
      created = "1970-01-01T00:00:01Z";
      config = {
        Entrypoint = [ "${package}/bin/${name}" ];
        User = "65534:65534";
        ExposedPorts = {
          "${toString ports.port}/tcp" = { };
          "${toString ports.adminPort}/tcp" = { };
        };
        # In a container the listeners must face the container's network, not its loopback.
        Env = [
          "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
          "TZDIR=${pkgs.tzdata}/share/zoneinfo"
          "${ports.listen}=0.0.0.0:${toString ports.port}"
          "${ports.admin}=0.0.0.0:${toString ports.adminPort}"
        ];
        Labels = {
          "org.opencontainers.image.title" = "realchat-${name}";
          "org.opencontainers.image.description" = binaries.${name};
          "org.opencontainers.image.version" = version;
          "org.opencontainers.image.revision" = revision;
          "org.opencontainers.image.licenses" = "Apache-2.0";
        } // lib.optionalAttrs (repository != null) {
          "org.opencontainers.image.source" = repository;
        };
      };
    };

  images = lib.mapAttrs' (name: ports: lib.nameValuePair "${name}-image" (image name ports)) servicePorts;
in
{
  packages = packages // images // {
    inherit workspace;
    default = pkgs.symlinkJoin {
      name = "realchat-services-${version}";
      paths = map (name: packages.${name}) (builtins.attrNames servicePorts);
    };
  };

  checks = {
    # Everything cargo sees, tests and benches included.
    clippy = craneLib.cargoClippy (commonArgs // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--workspace --all-targets -- --deny warnings";
    });

    fmt = craneLib.cargoFmt {
      inherit src version;
      pname = "realchat";
    };

    # Unit tests only: the integration tests need PostgreSQL, Redis and a broker, which the VM
    # tests provide instead.
    nextest = craneLib.cargoNextest (commonArgs // {
      inherit cargoArtifacts;
      cargoNextestExtraArgs = "--workspace --lib --bins";
    });
  };

  devShell = craneLib.devShell {
    inputsFrom = [ workspace ];
    packages = [
      pkgs.cargo-nextest
      pkgs.postgresql
      pkgs.redis
      pkgs.kcat
      pkgs.sqlite
      pkgs.nixpkgs-fmt
      pkgs.deadnix
    ];
  };
}
