import type { FastifyReply } from 'fastify';
import { DomainError } from '../../domain-error.ts';

/**
 * Runs a filtered listing; a filter the operator mistyped answers 400 with the same page and
 * the message beside the form (instead of a bare error page that loses the form).
 */
export async function listOrInvalid<T>(
  reply: FastifyReply,
  load: () => Promise<T>,
): Promise<{ result: T; error: null } | { result: null; error: string }> {
  try {
    return { result: await load(), error: null };
  } catch (error) {
    if (!(error instanceof DomainError) || error.kind !== 'invalid') throw error;
    reply.code(400);
    return { result: null, error: error.message };
  }
}
