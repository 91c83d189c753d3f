import { randomInt } from 'node:crypto';
import { DomainError } from '../domain-error.ts';

/** 31 characters without look-alikes (no 0/O, 1/I/L). */
export const CODE_ALPHABET = 'ABCDEFGHJKMNPQRSTUVWXYZ23456789';
export const CODE_LENGTH = 4;

const CODE_PATTERN = new RegExp(`^[${CODE_ALPHABET}]{${CODE_LENGTH}}$`);

export function generateCode(): string {
  let code = '';
  for (let index = 0; index < CODE_LENGTH; index++) code += CODE_ALPHABET[randomInt(CODE_ALPHABET.length)];
  return code;
}

/** Reads a code the way people type or paste it: any case, spaces and hyphens ignored ("ab-cd"). */
export function normalizeCode(input: unknown): string {
  const code = typeof input === 'string' ? input.replace(/[\s-]+/g, '').toUpperCase() : '';
  if (!CODE_PATTERN.test(code)) {
    throw new DomainError(
      'invalid',
      `A room code is ${CODE_LENGTH} characters from A–Z and 2–9 (no 0, 1, I, L or O).`,
      { title: 'That is not a room code' },
    );
  }
  return code;
}

export function isCode(input: unknown): boolean {
  return typeof input === 'string' && CODE_PATTERN.test(input);
}
