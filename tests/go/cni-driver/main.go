// cni-driver runs CNI plugins the way containerd's CRI plugin does, through
// github.com/containerd/go-cni (and so libcni): it loads the loopback network
// and the first configuration of a directory, then sets up, checks or removes
// one container's networks and prints what go-cni returned as JSON. (check
// leaves the loopback network out: see below.)
//
// It is built by netpath's integration test (tests/tests/cni.rs) from
// Debian's packaged sources, offline:
//
//	GO111MODULE=off GOPATH=$TMP:/usr/share/gocode go build -o cni-driver .
//
// Usage:
//
//	cni-driver -plugin-dir DIR[:DIR] -conf-dir DIR -cache-dir DIR setup|check|remove ID NETNS
//
// setup prints {"interfaces": {NAME: {"IPConfigs": [{"IP", "Gateway"}],
// "Mac", "Sandbox"}}, "dns": [...], "routes": [...]}; check and remove print
// nothing. Any failure is printed on stderr with exit code 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/libcni"
)

func main() {
	pluginDirs := flag.String("plugin-dir", "/opt/cni/bin", "plugin directories, separated by ':'")
	confDir := flag.String("conf-dir", "/etc/cni/net.d", "network configuration directory")
	cacheDir := flag.String("cache-dir", "", "libcni's result cache (default /var/lib/cni)")
	flag.Parse()
	if flag.NArg() != 3 {
		fail(fmt.Errorf("usage: cni-driver [flags] setup|check|remove ID NETNS"))
	}
	op, id, netns := flag.Arg(0), flag.Arg(1), flag.Arg(2)
	if *cacheDir != "" {
		// go-cni builds its libcni without a cache directory; libcni then
		// uses this one for the results that CHECK and DEL read back.
		libcni.CacheDir = *cacheDir
	}

	// As containerd's CRI plugin: New with the directories and the "eth"
	// prefix, then Load the loopback network and the default configuration.
	// CHECK leaves the loopback network out: go-cni writes it as cniVersion
	// 0.3.1, which has no CHECK, and libcni refuses to check it.
	withLo := op != "check"
	minNetworks := 1
	loads := []gocni.Opt{gocni.WithDefaultConf}
	if withLo {
		minNetworks = 2
		loads = []gocni.Opt{gocni.WithLoNetwork, gocni.WithDefaultConf}
	}
	cni, err := gocni.New(
		gocni.WithPluginDir(strings.Split(*pluginDirs, ":")),
		gocni.WithPluginConfDir(*confDir),
		gocni.WithInterfacePrefix("eth"),
		gocni.WithMinNetworkCount(minNetworks),
	)
	if err != nil {
		fail(fmt.Errorf("gocni.New: %w", err))
	}
	if err := cni.Load(loads...); err != nil {
		fail(fmt.Errorf("load: %w", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	switch op {
	case "setup":
		result, err := cni.Setup(ctx, id, netns)
		if err != nil {
			fail(fmt.Errorf("setup: %w", err))
		}
		out := map[string]interface{}{
			"interfaces": result.Interfaces,
			"dns":        result.DNS,
			"routes":     result.Routes,
		}
		if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
			fail(err)
		}
	case "check":
		if err := cni.Check(ctx, id, netns); err != nil {
			fail(fmt.Errorf("check: %w", err))
		}
	case "remove":
		if err := cni.Remove(ctx, id, netns); err != nil {
			fail(fmt.Errorf("remove: %w", err))
		}
	default:
		fail(fmt.Errorf("unknown operation %q: setup, check or remove", op))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cni-driver:", err)
	os.Exit(1)
}
