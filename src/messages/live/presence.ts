import type { Eta } from 'eta';
import type { LiveSocket } from './live-socket.ts';
import type { SocketRegistry } from './socket-registry.ts';

export type PresenceDeps = {
  registry: SocketRegistry;
  views: Eta;
  /** Tells the other processes (see CrossProcessFanout). */
  publishPresence(roomId: string, slot: 1 | 2, online: boolean, name: string | null): void;
  publishTyping(roomId: string, slot: 1 | 2, on: boolean): void;
};

/**
 * Who is online in a room, and who is typing. A participant is online while it has a socket in
 * the room in any process: here (the registry) or in another process that said so (its
 * presence events, kept by process id until that process leaves the room or falls silent).
 */
export class Presence {
  /** Presence announced by other processes: room -> slot -> process ids. */
  private readonly remote = new Map<string, Map<1 | 2, Set<string>>>();
  private readonly typingTimers = new Map<string, NodeJS.Timeout>();
  private readonly typingSentAt = new Map<string, number>();

  constructor(
    private readonly deps: PresenceDeps,
    /** A typing indicator clears after this long without another keystroke. */
    private readonly typingTimeoutMs: number,
  ) {}

  /** Whether the participant in `slot` has a live socket in this room, in any process. */
  isOnline(roomId: string, slot: 1 | 2): boolean {
    return this.deps.registry.count(roomId, slot) > 0 || (this.remote.get(roomId)?.get(slot)?.size ?? 0) > 0;
  }

  /** The partner's status, as a socket shows it (sent to each socket when it connects). */
  partnerStatus(live: LiveSocket): string {
    return this.render(live, this.isOnline(live.room.id, (3 - live.slot) as 1 | 2));
  }

  /** The participant in `slot` got its first socket here, or lost its last one. */
  localChanged(roomId: string, slot: 1 | 2, online: boolean): void {
    if (!online) this.clearTyping(roomId, slot);
    this.push(roomId, slot);
    this.deps.publishPresence(roomId, slot, online, this.deps.registry.nameOf(roomId, slot));
  }

  /** What this process says when another asks who is online in a room here. */
  localSlots(roomId: string): (1 | 2)[] {
    return ([1, 2] as const).filter((slot) => this.deps.registry.count(roomId, slot) > 0);
  }

  /** Another process has (or no longer has) sockets of `slot` in the room. */
  remoteChanged(processId: string, roomId: string, slot: 1 | 2, online: boolean, name?: string | null): void {
    let slots = this.remote.get(roomId);
    if (!slots) {
      slots = new Map();
      this.remote.set(roomId, slots);
    }
    let processes = slots.get(slot);
    if (!processes) {
      processes = new Set();
      slots.set(slot, processes);
    }
    const before = this.isOnline(roomId, slot);
    if (online) {
      this.deps.registry.learnName(roomId, slot, name);
      processes.add(processId);
    } else {
      processes.delete(processId);
      if (processes.size === 0) slots.delete(slot);
      if (slots.size === 0) this.remote.delete(roomId);
    }
    if (this.isOnline(roomId, slot) !== before) this.push(roomId, slot);
  }

  /** This process left the room: what others said about it is no longer heard, so it is dropped. */
  forgetRoom(roomId: string): void {
    this.remote.delete(roomId);
  }

  /** A process fell silent: whatever it said is online no longer is. */
  processGone(processId: string): void {
    for (const [roomId, slots] of this.remote) {
      for (const slot of [...slots.keys()]) {
        if (slots.get(slot)?.has(processId)) this.remoteChanged(processId, roomId, slot, false);
      }
    }
  }

  /**
   * A guest took the second seat: the host's pages here show the name (with or without a socket
   * of the guest, who may have no JavaScript).
   */
  guestJoined(roomId: string, guestName: string): void {
    if (this.deps.registry.nameOf(roomId, 2) !== null) return;
    this.deps.registry.learnName(roomId, 2, guestName);
    this.push(roomId, 2);
  }

  /** A keystroke here: the partner hears "typing" once in a while, and its end after a pause. */
  typing(roomId: string, slot: 1 | 2, on: boolean): void {
    const key = `${roomId}:${slot}`;
    const existing = this.typingTimers.get(key);
    if (existing) clearTimeout(existing);
    if (on) {
      this.typingTimers.set(
        key,
        setTimeout(() => this.typing(roomId, slot, false), this.typingTimeoutMs).unref(),
      );
      const last = this.typingSentAt.get(key) ?? 0;
      if (Date.now() - last < this.typingTimeoutMs / 2) return;
      this.typingSentAt.set(key, Date.now());
    } else {
      this.typingTimers.delete(key);
      this.typingSentAt.delete(key);
    }
    this.showTyping(roomId, slot, on);
    this.deps.publishTyping(roomId, slot, on);
  }

  /** A message was sent, or the participant left: it is no longer typing. */
  clearTyping(roomId: string, slot: 1 | 2): void {
    if (this.typingTimers.has(`${roomId}:${slot}`)) this.typing(roomId, slot, false);
  }

  /** Shows (or clears) "typing" of `slot` on its partner's sockets here. */
  showTyping(roomId: string, slot: 1 | 2, typing: boolean): void {
    const { registry, views } = this.deps;
    for (const live of registry.socketsOf(roomId)) {
      if (live.slot !== slot) {
        registry.send(live, views.render('partials/typing', { name: live.partnerName, typing, oob: true }));
      }
    }
  }

  stop(): void {
    for (const timer of this.typingTimers.values()) clearTimeout(timer);
  }

  /** Shows the (new) presence of `slot` to the sockets of its partner here. */
  private push(roomId: string, slot: 1 | 2): void {
    const online = this.isOnline(roomId, slot);
    for (const live of this.deps.registry.socketsOf(roomId)) {
      if (live.slot !== slot) this.deps.registry.send(live, this.render(live, online));
    }
  }

  private render(live: LiveSocket, online: boolean): string {
    const { views } = this.deps;
    const partnerName = live.partnerName;
    const status = views.render('partials/partner-status', { online, partnerName, oob: true });
    // A partner with a name has joined: the page stops asking to share the code.
    return partnerName === null
      ? status
      : status + views.render('partials/room-empty', { partnerJoined: true, oob: true });
  }
}
