import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsync } from 'fastify';
import { projectPath } from '../paths.ts';

/** `public/` under `/static/`, the same on both listeners (CSS, app.js, htmx, icons). */
export const staticAssets: FastifyPluginAsync = async (app) => {
  await app.register(fastifyStatic, {
    root: projectPath('public'),
    prefix: '/static/',
    maxAge: '1h',
    index: false,
    decorateReply: false,
  });
};
