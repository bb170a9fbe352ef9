# Source this file for a shell with the suite's environment:  source scripts/env.sh
# Activates .venv, exposes the ROS 2 wheels' libraries, and overlays install/ from colcon.
_HV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_HV_VENV=$_HV_ROOT/.venv
_HV_SITE=$_HV_VENV/lib/python3.11/site-packages
export VIRTUAL_ENV=$_HV_VENV
export PATH=$_HV_VENV/bin:$PATH
# The wheels' bootstrapper would re-exec every Python start to set this; set it once here instead.
export LD_LIBRARY_PATH=$_HV_VENV/lib:$(ls -d "$_HV_SITE"/ros_*.libs 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export AMENT_PREFIX_PATH=$_HV_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export CMAKE_PREFIX_PATH=$_HV_VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export MUJOCO_GL=${MUJOCO_GL:-egl}
# Larger shared-memory segment so 640x480 camera frames are not dropped (see config/fastdds.xml).
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$_HV_ROOT/config/fastdds.xml}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Discovery stays on this computer unless you say otherwise: any process that can reach the DDS domain can
# publish instructions, e-stops and frames. A generator on another host: export SUBNET (see README, Security).
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
if [ "${1:-}" != "--no-install" ] && [ -f "$_HV_ROOT/install/setup.bash" ]; then
  # colcon's setup scripts read unset variables: works in a `set -u` shell too
  case $- in *u*) _HV_NOUNSET=1; set +u ;; *) _HV_NOUNSET= ;; esac
  # shellcheck disable=SC1091
  source "$_HV_ROOT/install/setup.bash"
  [ -n "$_HV_NOUNSET" ] && set -u
  unset _HV_NOUNSET
fi
mkdir -p "$_HV_ROOT/log"
unset _HV_ROOT _HV_VENV _HV_SITE
