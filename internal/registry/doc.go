// Package registry pulls images from and pushes them to OCI registries, and
// manages registry credentials in Docker's config.json.
//
// It is built on go-containerregistry's remote, authn, name and transport
// packages. The image store is not imported: Pull writes to the small Store
// interface defined here, and Push takes any v1.Image. Wire the store with
// a wrapper that embeds it, so its optional Has (skip layers it holds) and
// V1Image (up-to-date check) methods are found too:
//
//	type pullStore struct{ *image.Store }
//
//	func (s pullStore) Write(ctx context.Context, img v1.Image, tags ...string) error {
//		_, err := s.Store.Write(ctx, img, tags...)
//		return err
//	}
//
//	pw := progress.New(os.Stderr, term.IsTerminal(int(os.Stderr.Fd())))
//	res, err := registry.Pull(ctx, "busybox", pullStore{st},
//		registry.WithPlatform("linux/arm64"),
//		registry.WithProgress(pw),
//		registry.WithStagingDir(filepath.Join(root, "tmp", "pull")))
//	pw.Close()
//	// res[0].Ref == "docker.io/library/busybox:latest", res[0].RepoDigest, res[0].UpToDate…
//
//	img, _ := st.V1Image(ctx, "localhost:5000/app:1")
//	digest, err := registry.Push(ctx, "localhost:5000/app:1", img, registry.WithProgress(pw))
//
//	_, err = registry.Login(ctx, "ghcr.io", user, pass) // errdefs.ErrUnauthorized when refused
//	err = registry.Logout(ctx, "ghcr.io")
//
// References are normalised as Docker does ("busybox" is
// docker.io/library/busybox:latest). TLS is verified except for loopback
// hosts and those named with WithInsecureRegistries or WithTLSVerify(false),
// which may also use plain HTTP. Every error is an *Error of one line that
// matches an errdefs class: ErrUnauthorized (refused credentials),
// ErrNotFound (unknown image, tag, platform or blob), ErrCorrupt (invalid
// manifest JSON, content not matching its digest), ErrUnavailable (unknown
// host, TLS failure, refused or dropped connection), ErrInvalidArgument.
//
// Pull downloads layers in parallel (WithJobs, default 3) into a staging
// directory, resuming an interrupted transfer with HTTP Range requests, and
// hands the store only blobs whose size and digest were verified; nothing
// reaches the store when any blob fails. With WithStagingDir a later Pull
// also resumes partial downloads a cancelled one left behind.
package registry
