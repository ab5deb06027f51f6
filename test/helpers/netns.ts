/**
 * "Hosts" for the partition test: Linux network namespaces joined by veth pairs, made and
 * removed by the test itself with iproute2 (`ip netns`, `ip link`). Needs root (CI runs as
 * root); {@link netnsUnavailable} says why not, so the test can skip with that reason.
 *
 * Names carry the creating process's pid (`tt<pid>-<host>`), so namespaces left by a run that
 * died are recognised and removed by the next one.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function ip(...args: string[]): Promise<string> {
  const { stdout } = await run('ip', args, { timeout: 10_000 });
  return stdout;
}

/** Why namespaces cannot be made here, or undefined when they can (tried for real). */
export async function netnsUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return `network namespaces are Linux-only (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root (run the tests as root, as CI does)';
  try {
    await run('ip', ['-V'], { timeout: 5_000 });
  } catch {
    return 'the ip command (iproute2) is not installed: apt-get install -y iproute2';
  }
  const probe = `tt${process.pid}-probe`;
  try {
    await ip('netns', 'add', probe);
  } catch (err) {
    return `ip netns add failed (${String((err as { stderr?: string }).stderr ?? err).trim()}): this machine does not allow network namespaces`;
  }
  await ip('netns', 'del', probe).catch(() => undefined);
  return undefined;
}

/** Removes namespaces and root-namespace links that runs of dead processes left behind. */
export async function removeStaleNamespaces(): Promise<void> {
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  };
  for (const line of (await ip('netns', 'list').catch(() => '')).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const pid = /^tt(\d+)-/.exec(name)?.[1];
    if (pid !== undefined && !alive(Number(pid))) await ip('netns', 'del', name).catch(() => undefined);
  }
  for (const line of (await ip('-o', 'link', 'show').catch(() => '')).split('\n')) {
    const name = /^\d+: (tt(\d+)[a-z]{2})[@:]/.exec(line);
    if (name && !alive(Number(name[2]))) await ip('link', 'del', name[1]!).catch(() => undefined);
  }
}

/** A set of namespaces ("hosts") and the links between them. */
export class Hosts {
  private readonly made: string[] = [];
  private readonly tag = `tt${process.pid}`;

  /** The namespace name of a host. */
  ns(host: string): string {
    return `${this.tag}-${host}`;
  }

  /** The command prefix that runs a program on a host. */
  exec(host: string): string[] {
    return ['ip', 'netns', 'exec', this.ns(host)];
  }

  /** Makes a host with its loopback up. */
  async add(host: string): Promise<void> {
    const ns = this.ns(host);
    await ip('netns', 'add', ns);
    this.made.push(ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
  }

  /**
   * Links two hosts with a veth pair on subnet `10.<net>.<subnet>.0/24` (`.1` on `a`, `.2` on
   * `b`). Returns the interface names (each at most 15 characters) and addresses.
   */
  async link(a: string, b: string, subnet: number): Promise<{ ifA: string; ifB: string; addrA: string; addrB: string }> {
    const ifA = `${this.tag}${a[0]}${b[0]}`;
    const ifB = `${this.tag}${b[0]}${a[0]}`;
    if (ifA.length > 15) throw new Error(`interface name ${ifA} too long`);
    const net = 200 + (process.pid % 50);
    const addrA = `10.${net}.${subnet}.1`;
    const addrB = `10.${net}.${subnet}.2`;
    await ip('link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB);
    try {
      await ip('link', 'set', ifA, 'netns', this.ns(a));
      await ip('link', 'set', ifB, 'netns', this.ns(b));
    } catch (err) {
      await ip('link', 'del', ifA).catch(() => undefined);
      throw err;
    }
    await ip('-n', this.ns(a), 'addr', 'add', `${addrA}/24`, 'dev', ifA);
    await ip('-n', this.ns(b), 'addr', 'add', `${addrB}/24`, 'dev', ifB);
    await ip('-n', this.ns(a), 'link', 'set', ifA, 'up');
    await ip('-n', this.ns(b), 'link', 'set', ifB, 'up');
    return { ifA, ifB, addrA, addrB };
  }

  /** Cuts (`down`) or restores (`up`) one end of a link, on the host holding it. */
  async setLink(host: string, iface: string, state: 'up' | 'down'): Promise<void> {
    await ip('-n', this.ns(host), 'link', 'set', iface, state);
  }

  /** Removes every namespace made (their interfaces go with them). Idempotent. */
  async removeAll(): Promise<void> {
    for (const ns of this.made.splice(0)) await ip('netns', 'del', ns).catch(() => undefined);
  }

  /** Names of this run's namespaces that still exist. */
  async remaining(): Promise<string[]> {
    const list = await ip('netns', 'list').catch(() => '');
    return list
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(`${this.tag}-`));
  }
}
