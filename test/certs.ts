// Throwaway PKI for TLS tests: a CA and server certificates signed by it, made with the openssl CLI in a
// temp dir. EC P-256 keys keep generation fast (a few ms each, unlike RSA); certificates are valid 1 day.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface CertFiles {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: string;
  readonly key: string;
}

export interface TestPki {
  readonly dir: string;
  /** The CA certificate (what a client must trust). */
  readonly ca: CertFiles;
  /** A server certificate for DNS:localhost and IP:127.0.0.1, signed by the CA. */
  readonly server: CertFiles;
  /** Another server certificate signed by the same CA, for `sans` (e.g. ["DNS:other.example"]). */
  issue(name: string, sans: readonly string[]): CertFiles;
  /** An empty file, for NODE_EXTRA_CA_CERTS that trusts nothing extra. */
  readonly emptyPath: string;
  cleanup(): void;
}

const OPENSSL = "/usr/bin/openssl";

function run(args: string[], cwd: string): void {
  const r = Bun.spawnSync([OPENSSL, ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) {
    throw new Error(`openssl ${args.join(" ")} failed (${r.exitCode}): ${r.stderr.toString()}`);
  }
}

function files(dir: string, name: string): CertFiles {
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  return { certPath, keyPath, cert: readFileSync(certPath, "utf8"), key: readFileSync(keyPath, "utf8") };
}

/** Makes a CA and a localhost server certificate in a fresh temp dir; call cleanup() to remove it. */
export function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "zzz-lb-certs-"));
  try {
    const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(
      [
        "req",
        "-x509",
        ...ecKey,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=zzz-lb test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
      ],
      dir,
    );
    const ca = files(dir, "ca");
    let serial = 1;
    const issue = (name: string, sans: readonly string[]): CertFiles => {
      run(
        ["req", "-new", ...ecKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`],
        dir,
      );
      writeFileSync(
        join(dir, `${name}.ext`),
        [
          "basicConstraints=critical,CA:FALSE",
          "keyUsage=critical,digitalSignature",
          "extendedKeyUsage=serverAuth",
          `subjectAltName=${sans.join(",")}`,
          "",
        ].join("\n"),
      );
      run(
        [
          "x509",
          "-req",
          "-in",
          `${name}.csr`,
          "-CA",
          "ca.crt",
          "-CAkey",
          "ca.key",
          "-set_serial",
          String(++serial),
          "-days",
          "1",
          "-sha256",
          "-extfile",
          `${name}.ext`,
          "-out",
          `${name}.crt`,
        ],
        dir,
      );
      return files(dir, name);
    };
    const server = issue("localhost", ["DNS:localhost", "IP:127.0.0.1"]);
    const emptyPath = join(dir, "empty.pem");
    writeFileSync(emptyPath, "");
    return {
      dir,
      ca,
      server,
      issue,
      emptyPath,
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
